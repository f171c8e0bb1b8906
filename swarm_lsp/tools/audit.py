"""The audit log: one JSON line per tool call, appended, secrets redacted.

Lines are written with one `write()` on a file opened with O_APPEND, under a lock, so concurrent
calls (threads here, or another server process on the same workspace) never interleave inside a
line. Arguments are redacted before they are written: values under secret-looking keys, strings
that look like keys or tokens, and long contents (file bodies, patches) which are reduced to their
length and hash.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, line)
                while written < len(line):  # only on a nearly full disk; finish the line
                    written += os.write(fd, line[written:])
            finally:
                os.close(fd)


def read_audit(path: Path) -> Iterator[dict[str, Any]]:
    """Entries in order; a line cut short (the disk filled, the machine lost power) is skipped."""
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
