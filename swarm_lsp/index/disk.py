"""The index folder's own small files: JSON written atomically (meta.json, the write journal), the
space reserve that lets a write failing on a full disk still clean up after itself (store.py), and
the size of a folder (the index's status, `index --gc`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESERVE_FILE = "space.reserve"
RESERVE_BYTES = 512 * 1024


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in `path`; None when it is missing, unreadable or not a JSON object."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def write_json(path: Path, meta: Mapping[str, Any]) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(dict(meta), handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not leave half a file behind
        raise


def keep_reserve(directory: Path) -> None:
    """Hold RESERVE_BYTES of disk in `directory`, so that a write failing on a full disk can still
    delete its half-written rows; made again, once there is room, by the next write."""
    reserve = directory / RESERVE_FILE
    if reserve.exists():
        return
    temporary = reserve.with_name(f".{RESERVE_FILE}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(bytes(RESERVE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, reserve)
    except OSError:  # no room yet: the next write tries again
        temporary.unlink(missing_ok=True)


def give_up_reserve(directory: Path) -> None:
    (directory / RESERVE_FILE).unlink(missing_ok=True)


def folder_bytes(folder: Path) -> int:
    """The size of the files under `folder`; a file removed meanwhile (a concurrent cleanup) counts 0."""
    total = 0
    for parent, _names, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                continue
    return total
