"""Settings as a person sees and edits them: every key with its value and where the value came from,
and one key changed in the workspace's .swarm-lsp.toml, checked before anything is written.

An edit is validated against all the settings layers as they would be after it (so an invalid value
is refused with the same message a bad file would get), then written atomically (a temporary file,
flushed to disk, renamed over the old one), with tomlkit so the file's comments and layout survive.
Secrets (api keys, tokens) are never shown and cannot be set here: a workspace file is often
committed, so they belong in the environment or the user's config file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from swarm_lsp.config import (
    WORKSPACE_FILE,
    ConfigError,
    LoadedSettings,
    Settings,
    load_settings,
    parse_setting_text,
    section_fields,
    validate_file_values,
)
from swarm_lsp.redaction import REDACTED, is_secret_key

APPLIES_NOW = ("swarm.",)
"""Keys that take effect at the next request; the others when the server restarts."""


class SettingRefused(ConfigError):
    """An edit was refused; nothing was written. `key` names the setting."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class SettingWritten:
    key: str
    value: Any
    """The value in effect after the write (an environment variable may still override the file)."""
    written: Any
    """The value written to the file."""
    file: Path
    applies: str  # "now" | "restart"
    warning: str | None
    loaded: LoadedSettings


def describe_settings(loaded: LoadedSettings) -> list[dict[str, Any]]:
    """Every setting: its effective value (secrets redacted), default, source and description."""
    rows = []
    defaults = Settings()
    for section in Settings.model_fields:
        values = getattr(loaded.settings, section)
        for key, info in type(values).model_fields.items():
            dotted = f"{section}.{key}"
            secret = is_secret_key(key)
            value = getattr(values, key)
            source = loaded.sources.get(dotted, "default")
            rows.append(
                {
                    "key": dotted,
                    "section": section,
                    "value": REDACTED if secret and value else value,
                    "default": getattr(getattr(defaults, section), key),
                    "source": source,
                    "description": info.description or "",
                    "editable": not secret,
                    "secret": secret,
                    "overridden_by": source if _overrides_file(source) else None,
                }
            )
    return rows


def set_workspace_setting(root: Path, key: str, value: Any) -> SettingWritten:
    """Set `key` ("section.name") to `value` in ROOT/.swarm-lsp.toml. A string is read as the user
    typed it (7, true, "text", ["a", "b"]). Raises SettingRefused, writing nothing, when the key is
    unknown or secret, the value invalid, or the file unreadable."""
    section, _, name = key.partition(".")
    fields = section_fields(section)
    if fields is None or name not in fields:
        raise SettingRefused(f"unknown setting '{key}'; the known ones are listed by GET /api/settings", key)
    if is_secret_key(name):
        variable = f"SWARM_LSP_{section.upper()}__{name.upper()}"
        raise SettingRefused(
            f"{key} is a secret and is not written to the workspace file (it is often committed); set "
            f"{variable} in the environment or put it in your user config file",
            key,
        )
    parsed = parse_setting_text(value) if isinstance(value, str) else value
    path = root / WORKSPACE_FILE
    document = _read_document(path, key)
    table = document.get(section)
    if table is None:
        table = tomlkit.table()
        document[section] = table
    elif not isinstance(table, dict):
        raise SettingRefused(f"{path}: '{section}' is not a table of settings; fix the file first", key)
    table[name] = parsed
    try:
        validate_file_values(path, document.unwrap())
        loaded = load_settings(root, workspace_file_values=document.unwrap())
    except ConfigError as error:
        raise SettingRefused(str(error), key) from None
    _write_atomically(path, tomlkit.dumps(document))
    source = loaded.sources.get(key, "")
    warning = None
    if _overrides_file(source):
        warning = f"written to {path}, but {source} sets {key} too and wins over the file"
    applies = "now" if key.startswith(APPLIES_NOW) else "restart"
    effective = getattr(getattr(loaded.settings, section), name)
    return SettingWritten(key, effective, parsed, path, applies, warning, loaded)


def _overrides_file(source: str) -> bool:
    return source.startswith(("environment", "editor"))


def _read_document(path: Path, key: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return tomlkit.document()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingRefused(f"cannot read {path}: {error}; nothing was written", key) from None
    except TOMLKitError as error:
        raise SettingRefused(
            f"{path} is not valid TOML ({error}); fix it first, nothing was written", key
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: a reader sees the old file or the new, never half."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
