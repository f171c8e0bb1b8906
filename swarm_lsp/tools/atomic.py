"""Atomic file writes: a temp file beside the target, fsync, then one rename.

A reader (or a crash at any moment) sees the old file or the new one, never a mix. The temp file
is a hidden sibling (`.name.<random>.swarm-lsp.tmp`, same folder so the rename cannot cross file
systems), and a small journal in the workspace's data folder names it while the write is in
flight, so temp files left by a process that was killed are removed the next time a server starts
(`WriteJournal.recover`). Everything is done relative to a directory fd reached by the sandbox
without following symlinks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from swarm_lsp.tools.sandbox import SafePath, Sandbox

TEMP_SUFFIX = ".swarm-lsp.tmp"
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX), re.S)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


class FileChanged(Exception):
    """The target changed between reading it and replacing it."""


@dataclass(frozen=True)
class Stamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, info: os.stat_result) -> Stamp:
        return cls(info.st_mtime_ns, info.st_size, info.st_ino)


class WriteJournal:
    """Names of temp files being written, one small file each, so a crash leaves none behind."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def begin(self, temp_path: Path) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = self.directory / f"{os.getpid()}-{secrets.token_hex(8)}.json"
        entry.write_text(json.dumps({"pid": os.getpid(), "temp": str(temp_path)}), encoding="utf-8")
        return entry

    @staticmethod
    def end(entry: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()

    def recover(self) -> list[Path]:
        """Remove temp files of writes whose process died mid-write; returns what was removed.

        Only regular files (not symlinks) named like our temp files, and only when the process
        that started the write is gone, are ever removed.
        """
        removed: list[Path] = []
        if not self.directory.is_dir():
            return removed
        for entry in sorted(self.directory.glob("*.json")):
            try:
                record = json.loads(entry.read_text(encoding="utf-8"))
                pid, temp = int(record["pid"]), Path(record["temp"])
            except (OSError, ValueError, KeyError, TypeError):
                self.end(entry)
                continue
            if process_alive(pid):
                continue
            if temp.is_absolute() and _TEMP_NAME.fullmatch(temp.name):
                try:
                    if stat.S_ISREG(os.lstat(temp).st_mode):
                        temp.unlink()
                        removed.append(temp)
                except FileNotFoundError:
                    pass
            self.end(entry)
        return removed


def process_alive(pid: int) -> bool:
    """Whether the process that wrote a journal entry may still be at work (this one always is)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(name: str) -> str:
    return f".{name[:180]}.{secrets.token_hex(6)}{TEMP_SUFFIX}"


def atomic_write(
    sandbox: Sandbox,
    safe: SafePath,
    data: bytes,
    journal: WriteJournal,
    *,
    exclusive: bool = False,
    expect: Stamp | None = None,
) -> None:
    """Replace (or create) `safe` with `data` atomically.

    `exclusive`: fail with FileExistsError if the file exists (checked atomically, not before).
    `expect`: fail with FileChanged if the file is no longer the one that was read.
    """
    name = safe.parts[-1]
    with sandbox.open_parent(safe, create=True) as folder:
        try:
            current = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None:
            if stat.S_ISDIR(current.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a folder", safe.shown)
            if not stat.S_ISREG(current.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", safe.shown)
            if exclusive:
                raise FileExistsError(errno.EEXIST, "exists", safe.shown)
        if expect is not None and (current is None or Stamp.of(current) != expect):
            raise FileChanged(safe.shown)
        temp = temp_name(name)
        entry = journal.begin(safe.path.parent / temp)
        try:
            fd = os.open(temp, _WRITE_FLAGS, 0o666, dir_fd=folder)
            try:
                if current is not None:
                    os.fchmod(fd, stat.S_IMODE(current.st_mode))
                view = memoryview(data)
                while view:
                    written = os.write(fd, view[:_CHUNK])
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                _link_exclusive(temp, name, folder)
            else:
                os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=folder)
            journal.end(entry)


def _link_exclusive(temp: str, name: str, folder: int) -> None:
    """Give the temp file its real name only if that name is free (atomic: link fails if it exists)."""
    try:
        os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: check, then rename (a narrow race, never a partial file).
        try:
            os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            return
        raise FileExistsError(errno.EEXIST, "exists", name) from None


def delete_file(sandbox: Sandbox, safe: SafePath) -> None:
    with sandbox.open_parent(safe) as folder:
        info = os.stat(safe.parts[-1], dir_fd=folder, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", safe.shown)
        os.unlink(safe.parts[-1], dir_fd=folder)
        os.fsync(folder)
