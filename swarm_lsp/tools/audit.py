"""The audit log: one JSON line per tool call, appended, secrets redacted, rotated by size.

Lines are written with one `write()` on a file opened with O_APPEND, under a lock, so concurrent
calls (threads here, or another server process on the same workspace) never interleave inside a
line. Arguments are redacted before they are written: values under secret-looking keys, strings
that look like keys or tokens, and long contents (file bodies, patches) which are reduced to their
length and hash.

Rotation: when a line would take the file past `max_bytes`, the file becomes `audit.jsonl.1` (the
older ones move up to `.2` ... `.keep`, the oldest is deleted) under a lock file that every process
writing the log takes, so two servers never rotate the same file twice. `read_audit` reads the
rotated files first, oldest to newest, then the current one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

DEFAULT_MAX_BYTES = 10_000_000
DEFAULT_KEEP = 5


def rotated(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        # A lone surrogate (from a client's "\\ud800", or a file name that is not UTF-8) is written as
        # its JSON escape: the line stays UTF-8 and reads back as what was called.
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._size() + len(line) > self.max_bytes:
                self._rotate(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, line)
                while written < len(line):  # only on a nearly full disk; finish the line
                    written += os.write(fd, line[written:])
            finally:
                os.close(fd)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _rotate(self, incoming: int) -> None:
        with filelock.FileLock(str(self.path.with_name(self.path.name + ".lock")), timeout=30):
            if self._size() + incoming <= self.max_bytes or not self.path.exists():
                return  # another process rotated it meanwhile
            rotated(self.path, self.keep).unlink(missing_ok=True)
            for number in range(self.keep - 1, 0, -1):
                older = rotated(self.path, number)
                if older.exists():
                    os.replace(older, rotated(self.path, number + 1))
            if self.keep > 0:
                os.replace(self.path, rotated(self.path, 1))
            else:
                self.path.unlink()


def read_audit(path: Path) -> Iterator[dict[str, Any]]:
    """Entries in order, across rotations (`.N` ... `.1`, then the file); a line cut short (the disk
    filled, the machine lost power) is skipped."""
    numbers = []
    if path.parent.is_dir():
        for item in path.parent.glob(path.name + ".*"):
            suffix = item.name[len(path.name) + 1 :]
            if suffix.isdigit():
                numbers.append(int(suffix))
    numbers.sort(reverse=True)
    for file in [*(rotated(path, number) for number in numbers), path]:
        yield from _entries(file)


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                continue
