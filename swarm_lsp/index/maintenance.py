"""Keeping the index fast: compaction, index refreshes, version cleanup, the vector index, cache pruning.

Every write adds a fragment and a version to each table it touches. `maybe_optimize` compacts a
table past `MAX_FRAGMENTS` fragments or `MAX_VERSIONS` versions and removes versions older than
`CLEANUP_OLDER_THAN` (never younger, so a reader in another process never loses the version it is
reading).

Full text. Lance's native FTS index answers for the rows it has indexed and scans the rows it has
not (new fragments), so a row is searchable by full text the moment its commit lands: no refresh
is needed for correctness. The scan costs about 20 microseconds per unindexed row (measured on 2
cores: 60,000 unindexed chunks make a query take 1.2 s, the same rows indexed 4 ms), so
`maybe_optimize` folds new rows into the index once more than `FTS_MAX_UNINDEXED_ROWS` wait. In
0.40 the only incremental way is `Table.optimize()` (compaction + index update + version cleanup):
about 3 s after indexing 60,000 chunks from scratch, under 1 s for a few hundred changed files.
An update moves a row to a new fragment, so `set_vectors` also un-indexes the rows it touches;
the same threshold covers that.

Vectors. A vector index is built only once `VECTOR_INDEX_MIN_ROWS` chunks have vectors: below that
an exact scan is exact and fast enough (about 40 ms for 30,000 384-d vectors). Building IVF-PQ over
60,000 384-d vectors took about 40 s on 2 cores, once; later vectors are searched exactly until
`maybe_optimize` folds them in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import IvfPq

from swarm_lsp.index.disk import folder_bytes
from swarm_lsp.index.errors import explains_storage_errors
from swarm_lsp.index.tables import (
    CACHE_SCHEMA,
    CHUNKS,
    EMBEDDING_CACHE,
    FILES,
    FTS_COLUMN,
    REFERENCES,
    SYMBOLS,
    VECTOR_COLUMN,
    cache_key,
)

MAX_FRAGMENTS = 16
"""Compact a table once it has more fragments than this (each write batch adds one)."""
MAX_VERSIONS = 64
"""Remove old versions once a table has more than this many (each write adds one)."""
CLEANUP_OLDER_THAN = timedelta(minutes=10)
"""Versions younger than this are kept: another process may still be reading one."""
FTS_MAX_UNINDEXED_ROWS = 200
"""Fold new rows into the FTS index past this many: each unindexed row costs a scan at query time
(1,870 of them made a werkzeug query 45 ms instead of 5 ms), folding in a few hundred costs under 1 s."""
VECTOR_INDEX_MIN_ROWS = 50_000
"""Build an IVF-PQ index once this many chunks have vectors; below it exact search is fast enough."""
VECTOR_MAX_UNINDEXED_ROWS = 10_000
"""With a vector index, fold new vectors into it past this many."""
CACHE_PRUNE_MIN_ROWS = 20_000
"""The embedding cache is pruned to what the chunks use once it is this big and twice their count."""


@dataclass(frozen=True)
class IndexStats:
    files: int
    chunks: int
    symbols: int
    references: int
    chunks_with_vectors: int
    embedding_backlog: int
    """Chunks still waiting for a vector (0 in full-text only mode)."""
    cached_embeddings: int
    embedder_id: str | None
    dimension: int | None
    updated_at: float | None
    """Unix time of the last write, None before the first."""
    disk_bytes: int
    fragments: dict[str, int]
    versions: dict[str, int]
    fts_unindexed_rows: int
    vector_index: bool


@dataclass(frozen=True)
class MaintenanceReport:
    optimized: tuple[str, ...]
    vector_index_created: bool
    cache_pruned: int
    seconds: float


class Maintenance:
    """The maintenance half of `IndexStore` (store.py), which it is mixed into: it works on the
    store's tables under the store's write lock."""

    directory: Path
    embedder_id: str | None
    dimension: int | None
    _db: Any
    _tables: dict[str, Any]
    _write_lock: threading.RLock
    _meta: dict[str, Any]
    _last_cleanup: dict[str, float]

    @explains_storage_errors
    def stats(self) -> IndexStats:
        tables = self._tables
        chunks = tables[CHUNKS].count_rows()
        with_vectors = tables[CHUNKS].count_rows("has_vector = true") if self.embedder_id else 0
        fragments = {}
        versions = {}
        for name, table in tables.items():
            fragments[name] = int(table.stats()["fragment_stats"]["num_fragments"])
            versions[name] = len(table.list_versions())
        return IndexStats(
            files=tables[FILES].count_rows(),
            chunks=chunks,
            symbols=tables[SYMBOLS].count_rows(),
            references=tables[REFERENCES].count_rows(),
            chunks_with_vectors=with_vectors,
            embedding_backlog=chunks - with_vectors if self.embedder_id else 0,
            cached_embeddings=tables[EMBEDDING_CACHE].count_rows(),
            embedder_id=self.embedder_id,
            dimension=self.dimension,
            updated_at=self._meta.get("updated_at"),
            disk_bytes=folder_bytes(self.directory),
            fragments=fragments,
            versions=versions,
            fts_unindexed_rows=self._unindexed_rows(FTS_COLUMN),
            vector_index=index_name_of(tables[CHUNKS], VECTOR_COLUMN) is not None,
        )

    @explains_storage_errors
    def maybe_optimize(self, *, force: bool = False) -> MaintenanceReport:
        """Compact, fold new rows into indexes and drop old versions where thresholds say so.

        Cheap when nothing is due (a few metadata reads). The indexer calls it after each sync;
        `force=True` optimizes every table (e.g. when the machine is idle).
        """
        self._check_writable()
        started = time.monotonic()
        optimized = []
        with self._write_lock:
            pruned = self._maybe_prune_cache()
            for name, table in self._tables.items():
                if force or self._optimize_due(name, table):
                    table.optimize(cleanup_older_than=CLEANUP_OLDER_THAN)
                    self._last_cleanup[name] = time.monotonic()
                    optimized.append(name)
            created = self.create_vector_index_if_needed()
        return MaintenanceReport(tuple(optimized), created, pruned, time.monotonic() - started)

    @explains_storage_errors
    def create_vector_index_if_needed(self, min_rows: int = VECTOR_INDEX_MIN_ROWS) -> bool:
        """Build the IVF-PQ vector index once `min_rows` chunks have vectors; returns whether it did.

        Later vectors are searched exactly until `maybe_optimize` folds them in.
        """
        self._check_writable()
        if self.embedder_id is None or self.dimension is None:
            return False
        chunks = self._tables[CHUNKS]
        with self._write_lock:
            if index_name_of(chunks, VECTOR_COLUMN) is not None:
                return False
            if chunks.count_rows("has_vector = true") < max(min_rows, 256):  # PQ training needs 256
                return False
            config = IvfPq(distance_type="cosine", num_sub_vectors=_sub_vectors(self.dimension))
            chunks.create_index(VECTOR_COLUMN, config=config, replace=True)
        return True

    def _optimize_due(self, name: str, table: Any) -> bool:
        if int(table.stats()["fragment_stats"]["num_fragments"]) > MAX_FRAGMENTS:
            return True
        if name == CHUNKS:
            if self._unindexed_rows(FTS_COLUMN) > FTS_MAX_UNINDEXED_ROWS:
                return True
            if self._unindexed_rows(VECTOR_COLUMN) > VECTOR_MAX_UNINDEXED_ROWS:
                return True
        last = self._last_cleanup.get(name)
        recently = last is not None and time.monotonic() - last < CLEANUP_OLDER_THAN.total_seconds()
        # Versions younger than CLEANUP_OLDER_THAN survive a cleanup, so retrying sooner does nothing.
        return not recently and len(table.list_versions()) > MAX_VERSIONS

    def _unindexed_rows(self, column: str) -> int:
        chunks = self._tables[CHUNKS]
        name = index_name_of(chunks, column)
        if name is None:
            return 0
        stats = chunks.index_stats(name)
        return int(stats.num_unindexed_rows) if stats is not None else 0

    def _maybe_prune_cache(self) -> int:
        """Drop cached vectors no chunk uses once the cache outgrows the chunks (edits leave old texts)."""
        if self.embedder_id is None:
            return 0
        cache = self._tables[EMBEDDING_CACHE]
        total = cache.count_rows()
        if total < max(CACHE_PRUNE_MIN_ROWS, 2 * self._tables[CHUNKS].count_rows()):
            return 0
        used = pa.array(
            [cache_key(self.embedder_id, h) for h in self._column(CHUNKS, "text_hash")], pa.string()
        )
        everything = cache.to_arrow()
        kept = everything.filter(pc.is_in(everything.column("key"), value_set=used))
        # One atomic overwrite; other embedders' vectors go too (they would be re-embedded on a switch).
        self._tables[EMBEDDING_CACHE] = self._db.create_table(
            EMBEDDING_CACHE, data=kept, schema=CACHE_SCHEMA, mode="overwrite"
        )
        return total - kept.num_rows


def index_name_of(table: Any, column: str) -> str | None:
    for index in table.list_indices():
        if list(index.columns) == [column]:
            return str(index.name)
    return None


def _sub_vectors(dimension: int) -> int:
    """PQ sub-vectors: lancedb's default of dimension/16 where it divides, else the largest divisor below."""
    target = max(1, dimension // 16)
    return next(n for n in range(target, 0, -1) if dimension % n == 0)
