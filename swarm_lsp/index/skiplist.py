"""The files the index leaves out and why, kept beside the index so `swarm-lsp index --status` (and
the status every door shows) can say it long after the sync that skipped them.

A full sync replaces the list; a sync of some paths (the watcher's) replaces the entries under
those paths. Written atomically; a list that cannot be read is an empty one (it only explains).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from swarm_lsp.index.ignore import Skipped

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.json"


def read_skipped(path: Path) -> list[Skipped]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return [Skipped(str(entry["path"]), str(entry["reason"])) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def updated(
    known: Sequence[Skipped], found: Sequence[Skipped], synced: Sequence[str] | None
) -> list[Skipped]:
    """The list after a sync that found `found` skipped among `synced` (None: the whole workspace)."""
    if synced is None:
        kept: list[Skipped] = []
    else:
        prefixes = tuple(f"{rel}/" for rel in synced)
        kept = [item for item in known if item.path not in synced and not item.path.startswith(prefixes)]
    merged = {item.path: item for item in [*kept, *found]}
    return sorted(merged.values(), key=lambda item: item.path)


def write_skipped(path: Path, items: Sequence[Skipped]) -> None:
    """Atomically; a failure (a full disk) is logged, never raised: the index itself is complete."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps([{"path": item.path, "reason": item.reason} for item in items])
    try:
        temporary.write_text(payload, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        log.warning("could not record the skipped files in %s: %s", path, error)
