"""Removing the index data of workspaces that no longer exist (`swarm-lsp index --gc`).

Each workspace's data folder (under the cache's `workspaces/`) records the root it belongs to in
`workspace.json` when its index is first opened. A folder whose root is no longer a folder is
removed (unless a process holds its writer lock); a folder without the record (made by an older
version) is listed and kept, since its owner cannot be known.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from swarm_lsp.config import cache_root
from swarm_lsp.index.disk import folder_bytes

OWNER_FILE = "workspace.json"


@dataclass
class Collected:
    removed: list[tuple[str, str, int]] = field(default_factory=list)
    """(data folder, the workspace root that is gone, bytes)."""
    kept: int = 0
    unknown: list[str] = field(default_factory=list)
    """Data folders that do not say whose they are."""
    busy: list[str] = field(default_factory=list)
    """Data folders of missing workspaces that a process still holds."""

    @property
    def freed_bytes(self) -> int:
        return sum(size for _folder, _root, size in self.removed)


def record_owner(data_dir: Path, root: Path) -> None:
    """Write which workspace a data folder belongs to (once; a later root of the same name keeps it)."""
    owner = data_dir / OWNER_FILE
    if not owner.exists():
        temporary = owner.with_suffix(".tmp")
        temporary.write_text(json.dumps({"root": str(root)}), encoding="utf-8")
        os.replace(temporary, owner)


def collect_garbage(*, dry_run: bool = False, base: Path | None = None) -> Collected:
    folders = base or cache_root() / "workspaces"
    collected = Collected()
    if not folders.is_dir():
        return collected
    for folder in sorted(path for path in folders.iterdir() if path.is_dir()):
        try:
            root = Path(json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))["root"])
        except (OSError, ValueError, KeyError, TypeError):
            collected.unknown.append(str(folder))
            continue
        if root.is_dir():
            collected.kept += 1
            continue
        size = folder_bytes(folder)
        if not dry_run:
            try:
                # A process serving the workspace holds the lock while it writes: leave the folder then.
                with filelock.FileLock(str(folder / "writer.lock"), timeout=0):
                    for item in folder.iterdir():
                        if item.name != "writer.lock":
                            _remove(item)
                shutil.rmtree(folder, ignore_errors=True)
            except filelock.Timeout:
                collected.busy.append(str(folder))
                continue
        collected.removed.append((str(folder), str(root), size))
    return collected


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
