"""The patch journal: apply_patch over several files is all-or-nothing, even across a crash.

Each file is written atomically (atomic.py), but a process killed between two files of one patch
would leave some patched and others not. So before the first file is written, the patch is recorded
in the workspace's data folder, beside the temp-file journal of atomic.py (`pending-writes/`):

    pending-patches/<pid>-<random>/
        0.before  0.after  1.before ...  each file's bytes before and after the patch, fsynced
                                         (no `.before`: the patch creates it; no `.after`: deletes it)
        manifest.json                    the real paths, the roots the call was checked against and
                                         the files' modes; written last (temp file, fsync, rename,
                                         folder fsync), so a journal without it never saw a write
        committed                        created and fsynced once every file is written

and removed when the patch is done. `PatchJournal.recover`, called when a toolbox starts, settles the
journals of processes that are gone (a live process, another server on the same workspace, is
left alone):

- no manifest: nothing was written yet; the journal is removed;
- not committed: rolled back, every file in its after-state gets its before-state again (a file
  the patch created is deleted, one it deleted is recreated with its mode);
- committed: rolled forward, a file still in its before-state gets its after-state.

A file whose content is neither its before nor its after has been changed since the crash (by
you, most likely): it is left as it is and reported, never overwritten. Every path is resolved
again through a sandbox over the recorded roots, so recovery writes only where the call could.
A journal with a file that could not be settled (an I/O error) stays for the next start.
The same rollback undoes a patch that fails part-way while its process is alive.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from swarm_lsp.tools.atomic import WriteJournal, atomic_write, delete_file, process_alive
from swarm_lsp.tools.sandbox import SafePath, Sandbox, SandboxRefused

MANIFEST = "manifest.json"
COMMITTED = "committed"
_FOLDER_NAME = re.compile(r"(\d+)-[0-9a-f]{16}")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class FileChange:
    """One file of a patch: its bytes before (None: the patch creates it) and after (None: deletes it)."""

    path: Path
    """The real path, as the sandbox resolved it."""
    shown: str
    before: bytes | None
    after: bytes | None
    mode: int | None = None
    """The permission bits it had, to give a deleted file back as it was."""


@dataclass
class Settlement:
    """What bringing a patch's files to one side (before or after) did."""

    journal: Path
    direction: str
    """"rolled back" or "rolled forward"."""
    restored: list[str] = field(default_factory=list)
    changed_since: list[str] = field(default_factory=list)
    """Left as they are: their content is neither the patch's before nor its after."""
    failed: list[str] = field(default_factory=list)
    """"path: why" for files that could not be settled; the journal stays for the next start."""

    @property
    def settled(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        if self.restored:
            parts = [f"{len(self.restored)} file(s) {self.direction} ({', '.join(self.restored)})"]
        elif self.direction == "rolled forward":
            parts = ["rolled forward: every file already had its patched content"]
        else:
            parts = ["rolled back: no file needed it"]
        if self.changed_since:
            parts.append(
                "left as they are, changed since the patch (neither its before nor its after): "
                + ", ".join(self.changed_since)
            )
        if self.failed:
            parts.append(
                "could not be settled: "
                + "; ".join(self.failed)
                + f" (the journal {self.journal} keeps their contents; the next start tries again, "
                "or remove it once you have looked)"
            )
        return "; ".join(parts)


class PendingPatch:
    """A patch recorded in the journal, being written by this process."""

    def __init__(self, folder: Path, changes: Sequence[FileChange]) -> None:
        self.folder = folder
        self._changes = list(changes)

    def commit(self) -> None:
        """Every file is written: from now on a crash rolls the patch forward, not back."""
        fd = os.open(self.folder / COMMITTED, _NEW_FILE, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_folder(self.folder)

    def roll_back(self, sandbox: Sandbox, writes: WriteJournal) -> Settlement:
        """Give every file already written its before-state again (a failure part-way)."""
        return _settle(self.folder, self._changes, sandbox, writes, forward=False)

    def close(self) -> None:
        """The patch is settled: forget it."""
        shutil.rmtree(self.folder, ignore_errors=True)


class PatchJournal:
    def __init__(self, directory: Path, writes: WriteJournal) -> None:
        self.directory = directory
        self.writes = writes

    def begin(self, changes: Sequence[FileChange], roots: Sequence[Path]) -> PendingPatch:
        """Record `changes` durably before any of them is written; OSError when it cannot."""
        created = not self.directory.is_dir()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if created:
            _fsync_folder(self.directory.parent)
        folder = self.directory / f"{os.getpid()}-{secrets.token_hex(8)}"
        folder.mkdir(mode=0o700)
        try:
            files: list[dict[str, Any]] = []
            for number, change in enumerate(changes):
                record: dict[str, Any] = {"path": str(change.path), "shown": change.shown}
                record["mode"] = change.mode
                for side, data in (("before", change.before), ("after", change.after)):
                    name = None
                    if data is not None:
                        name = f"{number}.{side}"
                        _write_durably(folder / name, data)
                    record[side] = name
                files.append(record)
            manifest = {
                "pid": os.getpid(),
                "created": time.time(),
                "roots": [str(root) for root in roots],
                "files": files,
            }
            staged = folder / (MANIFEST + ".tmp")
            _write_durably(staged, json.dumps(manifest, ensure_ascii=False).encode("utf-8"))
            os.replace(staged, folder / MANIFEST)
            _fsync_folder(folder)
            _fsync_folder(self.directory)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return PendingPatch(folder, changes)

    def recover(self, sandbox_for: Callable[[tuple[Path, ...]], Sandbox]) -> list[Settlement]:
        """Settle the journals of processes that are gone; returns what was done for each with writes.

        `sandbox_for(roots)` gives the sandbox a call over those roots would get.
        """
        if not self.directory.is_dir():
            return []
        settlements: list[Settlement] = []
        # Two servers starting at once must not settle the same journal together.
        with filelock.FileLock(str(self.directory / ".recover.lock"), timeout=60):
            for folder in sorted(self.directory.iterdir()):
                named = _FOLDER_NAME.fullmatch(folder.name)
                if named is None or not folder.is_dir() or folder.is_symlink():
                    continue
                if process_alive(int(named.group(1))):
                    continue
                settlement = self._recover_one(folder, sandbox_for)
                if settlement is None:
                    shutil.rmtree(folder, ignore_errors=True)
                    continue
                settlements.append(settlement)
                if settlement.settled:
                    shutil.rmtree(folder, ignore_errors=True)
        return settlements

    def _recover_one(
        self, folder: Path, sandbox_for: Callable[[tuple[Path, ...]], Sandbox]
    ) -> Settlement | None:
        """None: nothing to settle (the process died before its first write)."""
        if not (folder / MANIFEST).is_file():
            return None
        forward = (folder / COMMITTED).exists()
        direction = "rolled forward" if forward else "rolled back"
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            roots = tuple(Path(root) for root in manifest["roots"])
            entries = [_read_entry(folder, record) for record in manifest["files"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            return Settlement(folder, direction, failed=[f"{folder / MANIFEST}: unreadable ({error})"])
        try:
            sandbox = sandbox_for(roots)
        except ValueError as error:
            failed = [f"{entry.shown}: {error}" for entry in entries]
            return Settlement(folder, direction, failed=failed)
        return _settle(folder, entries, sandbox, self.writes, forward=forward)


def _read_entry(folder: Path, record: dict[str, Any]) -> FileChange:
    def side(name: str | None) -> bytes | None:
        if name is None:
            return None
        if "/" in name or name.startswith("."):
            raise ValueError(f"unexpected content file name {name!r}")
        return (folder / name).read_bytes()

    mode = record.get("mode")
    return FileChange(
        Path(record["path"]),
        str(record.get("shown") or record["path"]),
        side(record["before"]),
        side(record["after"]),
        mode if isinstance(mode, int) else None,
    )


def _settle(
    folder: Path, entries: Sequence[FileChange], sandbox: Sandbox, writes: WriteJournal, *, forward: bool
) -> Settlement:
    """Bring every file to its after-state (`forward`) or its before-state, never over someone's edit."""
    settlement = Settlement(folder, "rolled forward" if forward else "rolled back")
    for entry in entries:
        wanted, other = (entry.after, entry.before) if forward else (entry.before, entry.after)
        try:
            safe = sandbox.resolve(str(entry.path), write=True, argument="journal path")
            current = _current(sandbox, safe)
            if current == wanted:
                continue
            if current != other:
                settlement.changed_since.append(entry.shown)
                continue
            if wanted is None:
                delete_file(sandbox, safe)
            else:
                atomic_write(sandbox, safe, wanted, writes)
                if current is None and entry.mode is not None:
                    _set_mode(sandbox, safe, entry.mode)
            settlement.restored.append(entry.shown)
        except (OSError, SandboxRefused) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            settlement.failed.append(f"{entry.shown}: {reason}")
    return settlement


def _current(sandbox: Sandbox, safe: SafePath) -> bytes | None:
    """The file's bytes now; None when it does not exist."""
    try:
        data, _info = sandbox.read_bytes(safe)
    except FileNotFoundError:
        return None
    return data


def _set_mode(sandbox: Sandbox, safe: SafePath, mode: int) -> None:
    with sandbox.open_parent(safe) as parent:
        fd = os.open(safe.parts[-1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=parent)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, _NEW_FILE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[: 1 << 20]) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
