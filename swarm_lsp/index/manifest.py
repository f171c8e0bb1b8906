"""A snapshot of what the last full sync left on disk, to answer "nothing changed" without the index.

Opening the index costs `import lancedb` (over a second on a small machine) before the scan can
start. The manifest lets `swarm-lsp index` answer a no-change re-run from a walk and an lstat per
file: it lists every indexed file with the size and mtime it was indexed at, the files the scan
skipped (and why), and the index status at that moment.

Rules that keep it honest:

- It is written only at the end of a full sync, inside the writer lock, after every write of
  that sync (`Indexer.sync(on_full_sync=...)`).
- Every write to the index deletes it first (`IndexStore` calls `invalidate` before writing), so
  a crash, a watcher sync, an unsaved buffer or background embedding leaves no manifest, and the
  next run takes the full path.
- It holds a fingerprint of everything besides the files that decides what the index holds
  (format version, embedder settings, chunk size, file cap, ignore patterns); a different one
  means the full path.
- Any difference on disk (a new, changed, removed or symlinked file) means the full path.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_lsp.index.ignore import IgnoreRules, hidden_patterns
from swarm_lsp.index.records import SCHEMA_VERSION

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    fingerprint: str
    files: dict[str, tuple[int, int]]
    """Indexed path -> (size, mtime_ns) as indexed."""
    skipped: dict[str, tuple[int, int, str]]
    """Path the scan skipped -> (size, mtime_ns, reason)."""
    status: dict[str, Any]
    """The index status (`IndexStatus.to_dict()`) when the manifest was written."""


@dataclass(frozen=True)
class Unchanged:
    """A no-change re-run answered from the manifest."""

    unchanged: int
    skipped: list[tuple[str, str]]
    status: dict[str, Any]


def manifest_path(data_dir: Path) -> Path:
    return data_dir / MANIFEST_FILE


def invalidate(data_dir: Path) -> None:
    """Drop the manifest: called before any write to the index."""
    manifest_path(data_dir).unlink(missing_ok=True)


def fingerprint(root: Path, index_settings: dict[str, Any], hidden: list[str]) -> str:
    """What decides the index's content besides the files themselves."""
    material = {
        "manifest": MANIFEST_VERSION,
        "schema": SCHEMA_VERSION,
        "root": str(root),
        "index": {key: value for key, value in sorted(index_settings.items()) if key not in ("watch",)},
        "hidden": hidden,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_for(root: Path, settings: Any) -> str:
    """`fingerprint` of a workspace's settings (`settings` is a `config.Settings`)."""
    return fingerprint(root, settings.index.model_dump(), hidden_patterns(settings))


def write(data_dir: Path, manifest: Manifest) -> None:
    """Atomically: a reader sees the old manifest, the new one or none, never half of one."""
    target = manifest_path(data_dir)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    payload = {
        "version": MANIFEST_VERSION,
        "fingerprint": manifest.fingerprint,
        "files": manifest.files,
        "skipped": manifest.skipped,
        "status": manifest.status,
    }
    try:
        temporary.write_text(json.dumps(payload, separators=(",", ":")))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not leave half a file behind
        raise


def read(data_dir: Path) -> Manifest | None:
    try:
        payload = json.loads(manifest_path(data_dir).read_text())
        if payload.get("version") != MANIFEST_VERSION:
            return None
        return Manifest(
            fingerprint=payload["fingerprint"],
            files={path: (int(size), int(mtime)) for path, (size, mtime) in payload["files"].items()},
            skipped={
                path: (int(size), int(mtime), str(reason))
                for path, (size, mtime, reason) in payload["skipped"].items()
            },
            status=dict(payload["status"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, half-written by an older version, or hand-edited: take the full path


def check_unchanged(rules: IgnoreRules, manifest: Manifest, expected_fingerprint: str) -> Unchanged | None:
    """The answer of a no-change sync when the disk is exactly what the manifest says; else None."""
    if manifest.fingerprint != expected_fingerprint:
        return None
    seen = 0
    skipped: list[tuple[str, str]] = []
    for rel, absolute in rules.walk():
        try:
            info = absolute.lstat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None  # a symlink's target may have changed: the full path checks it
        known = manifest.files.get(rel)
        if known is not None:
            if known != (info.st_size, info.st_mtime_ns):
                return None
            seen += 1
            continue
        passed = manifest.skipped.get(rel)
        if passed is None or passed[:2] != (info.st_size, info.st_mtime_ns):
            return None  # a new file, or a skipped one that changed
        skipped.append((rel, passed[2]))
    if seen != len(manifest.files):
        return None  # something indexed is gone
    return Unchanged(unchanged=seen, skipped=skipped, status=manifest.status)
