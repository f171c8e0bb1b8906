"""A bounded cache of read-tool results, dropped as soon as what they were read from changes.

An entry remembers the files it was read from with their (mtime, size, inode) and, for results
that came from the index (search, symbols, outlines, the repo map), the index generation it saw.
The file watcher bumps the generation after every sync and names changed files; the write tools
do the same for what they write. A hit is served only when every file still has the stat it had,
so a change the watcher has not reported yet (or a file it ignores) never serves stale text.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

Stamp = tuple[int, int, int] | None


def file_stamp(path: Path) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


@dataclass
class _Entry:
    value: Any
    size: int
    stamps: dict[Path, Stamp]
    generation: int | None


class ResultCache:
    def __init__(self, max_entries: int = 512, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._by_path: dict[Path, set[Hashable]] = {}
        self._bytes = 0
        self._generation = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def generation(self) -> int:
        """The index generation: read it before computing a result, pass it to `put`."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            stale = entry.generation is not None and entry.generation != self._generation
            if not stale:
                stale = any(file_stamp(path) != stamp for path, stamp in entry.stamps.items())
            if stale:
                self._drop(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    @staticmethod
    def stamps(paths: Iterable[Path]) -> dict[Path, Stamp]:
        """Take these before computing a result and pass them to `put`."""
        return {path: file_stamp(path) for path in paths}

    def put(
        self,
        key: Hashable,
        value: Any,
        stamps: dict[Path, Stamp],
        index_backed: bool,
        generation: int,
    ) -> None:
        """Keep `value`. `stamps` and `generation` are what they were before the value was computed,
        so a change that happened meanwhile makes it stale at once."""
        if self.max_entries <= 0:
            return
        size = int(getattr(value, "size", 0) or 0)
        if size > self.max_bytes // 4:
            return  # one huge result would push out everything else
        with self._lock:
            if index_backed and generation != self._generation:
                return
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(value, size, stamps, generation if index_backed else None)
            self._bytes += size
            for path in stamps:
                self._by_path.setdefault(path, set()).add(key)
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                self._drop(next(iter(self._entries)))

    def invalidate_paths(self, paths: Iterable[Path]) -> None:
        with self._lock:
            for path in paths:
                for key in list(self._by_path.get(path, ())):
                    self._drop(key)

    def index_changed(self) -> None:
        """The index was synced: every result that came from it is stale."""
        with self._lock:
            self._generation += 1
            for key in [k for k, e in self._entries.items() if e.generation is not None]:
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_path.clear()
            self._bytes = 0

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for path in entry.stamps:
            keys = self._by_path.get(path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_path[path]
