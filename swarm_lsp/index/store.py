"""The index's storage. This is the only module that imports lancedb.

One directory per workspace (`IndexStore.for_workspace` puts it at `workspace_data_dir(root)/index`):

    meta.json               schema version, embedder id and dimension, last update time
    files.lance             one row per indexed file: size, mtime_ns, sha256, language, outline
    symbols.lance           definitions (functions, classes, ...)
    chunks.lance            retrievable pieces: text, `search_text` (the full-text index is on it) and
                            the embedding, null until the background embedder fills it in
    references.lance        uses of names, for the repo graph
    embedding_cache.lance   (embedder id, chunk text hash) -> vector; survives rebuilds

Rebuilds. `meta.json` records the schema version, the embedder id and the dimension the data was
written with. When any of them differs from what `open` is asked for, or a table is missing,
unreadable or shaped differently, the four data tables are recreated empty (a new table version, so
readers holding the old one are not broken) and `rebuilt_reason` says why; the indexer then sees no
indexed files and indexes everything again. The embedding cache is kept, so a rebuild that only
changed the schema re-embeds nothing. Nobody is ever asked to delete a folder.

Crash safety. Each `merge_insert` is one atomic commit of one table, and a batch touches four
tables, so a SIGKILL can land between commits. Two rules make that harmless:
1. The `files` row is written last (`replace_files`) and deleted last (`delete_files`), so a file is
   listed as indexed only after every other table holds its rows. A crash between commits leaves
   the old `files` row (the next sync sees a stale sha256, or a file gone from disk, and redoes it)
   or none (the next sync indexes the file; merges replace by path, so nothing is duplicated).
2. Before its first commit a batch writes its paths to `pending.json` (fsynced) and removes it after
   its last. A writer that opens the index and finds the journal deletes every row of those paths,
   `files` last, then the journal: no half-written file survives, not even one whose content was
   reverted to what the old `files` row vouches for, and no rows are left for a new file that was
   also removed from disk. `recovered_paths` lists them; the next sync indexes whichever still exist.
A crash inside a commit leaves only unreferenced data files, which Lance never reads and a later
cleanup removes. `remove_orphans()` is a check that finds rows without a `files` row (none, if the
rules hold) and deletes them.

Full text. Lance's native FTS index answers for the rows it has indexed and scans the rows it has
not (new fragments), so a row is searchable by full text the moment its commit lands: no refresh
is needed for correctness. The scan costs about 20 microseconds per unindexed row (measured on 2
cores: 60,000 unindexed chunks make a query take 1.2 s, the same rows indexed 4 ms), so
`maybe_optimize` folds new rows into the index once more than `FTS_MAX_UNINDEXED_ROWS` wait. In
0.40 the only incremental way is `Table.optimize()` (compaction + index update + version cleanup):
about 3 s after indexing 60,000 chunks from scratch, under 1 s for a few hundred changed files.
An update moves a row to a new fragment, so `set_vectors` also un-indexes the rows it touches;
the same threshold covers that.
Identifiers are split for the index: `search_text` holds the path, the symbol and the text, plus
camelCase words split ("getJson" -> "get Json") and snake_case words joined ("get_json" ->
"getjson"); the tokenizer itself splits on "_" and lowercases, so "get json", "get_json" and
"getJson" find each other.

Maintenance. Every write adds a fragment and a version to each table it touches. `maybe_optimize`
compacts a table past `MAX_FRAGMENTS` fragments or `MAX_VERSIONS` versions and removes versions
older than `CLEANUP_OLDER_THAN` (never younger, so a reader in another process never loses the
version it is reading). A vector index is built only once `VECTOR_INDEX_MIN_ROWS` chunks have
vectors: below that an exact scan is exact and fast enough (about 40 ms for 30,000 384-d
vectors). Building IVF-PQ over 60,000 384-d vectors took about 40 s on 2 cores, once; later
vectors are searched exactly until `maybe_optimize` folds them in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.expr import Expr, col, lit
from lancedb.index import FTS, IvfPq

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.config import workspace_data_dir
from swarm_lsp.index import manifest
from swarm_lsp.index.records import SCHEMA_VERSION, Chunk, FileRecord, ParsedFile, Reference, Symbol

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
JOURNAL_FILE = "pending.json"
FILES, SYMBOLS, CHUNKS, REFERENCES, EMBEDDING_CACHE = (
    "files",
    "symbols",
    "chunks",
    "references",
    "embedding_cache",
)
DATA_TABLES = (FILES, SYMBOLS, CHUNKS, REFERENCES)
FTS_COLUMN = "search_text"
VECTOR_COLUMN = "vector"

MAX_FRAGMENTS = 16
"""Compact a table once it has more fragments than this (each write batch adds one)."""
MAX_VERSIONS = 64
"""Remove old versions once a table has more than this many (each write adds one)."""
CLEANUP_OLDER_THAN = timedelta(minutes=10)
"""Versions younger than this are kept: another process may still be reading one."""
FTS_MAX_UNINDEXED_ROWS = 2_000
"""Fold new rows into the FTS index past this many (each costs a scan at query time)."""
VECTOR_INDEX_MIN_ROWS = 50_000
"""Build an IVF-PQ index once this many chunks have vectors; below it exact search is fast enough."""
VECTOR_MAX_UNINDEXED_ROWS = 10_000
"""With a vector index, fold new vectors into it past this many."""
CACHE_PRUNE_MIN_ROWS = 20_000
"""The embedding cache is pruned to what the chunks use once it is this big and twice their count."""
RRF_K = 60
"""Reciprocal-rank fusion constant (Cormack et al.): score = sum of 1 / (RRF_K + rank)."""
_IN_LIST_SIZE = 1_000
"""Keys per IN (...) filter when reading by key."""

_HIT_COLUMNS = ["chunk_id", "path", "start_line", "end_line", "symbol", "kind", "language", "text"]


class IndexStoreError(SwarmLspError):
    """The index cannot do what was asked; the message says what to do."""


class VectorSearchUnavailable(IndexStoreError):
    """The index has no embedder (full-text only mode)."""


class IndexNotReady(IndexStoreError):
    """A read-only store found an index that the writing process has not (re)built yet."""


@dataclass(frozen=True)
class IndexedFile:
    """What the indexer compares against the disk to decide whether a file changed."""

    path: str
    language: str
    size: int
    mtime_ns: int
    sha256: str
    indexed_at: float


@dataclass(frozen=True)
class ChunkHit:
    chunk_id: str
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    kind: str
    language: str
    text: str
    score: float
    """Higher is better: BM25 for full text, cosine similarity for vectors, RRF for hybrid."""
    modes: frozenset[str]
    """Which searches found it: {"fts"}, {"vector"} or both."""
    fts_score: float | None = None
    vector_distance: float | None = None


class PendingChunk(NamedTuple):
    """A chunk that has no vector yet. Chunks can share a text (and its hash): embed each text once."""

    chunk_id: str
    text: str
    text_hash: str


@dataclass(frozen=True)
class SearchFilter:
    """Restricts a search; every field that is set must hold."""

    paths: Sequence[str] | None = None
    path_prefix: str | None = None
    """A folder such as "src/"; plain text, not a pattern."""
    languages: Sequence[str] | None = None
    kinds: Sequence[str] | None = None


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


class IndexStore:
    """Tables, writes, searches and maintenance of one workspace index. Thread-safe; writes serialize."""

    def __init__(
        self,
        directory: Path,
        db: Any,
        *,
        embedder_id: str | None,
        dimension: int | None,
        read_only: bool,
    ) -> None:
        self.directory = directory
        self.embedder_id = embedder_id
        self.dimension = dimension
        self.read_only = read_only
        self.rebuilt_reason: str | None = None
        """Why the data tables were recreated on open, or None if they were not."""
        self.recovered_paths: list[str] = []
        """Files whose write a crash interrupted; their rows were removed on open, to be indexed again."""
        self._db = db
        self._tables: dict[str, Any] = {}
        self._write_lock = threading.RLock()
        self._meta: dict[str, Any] = {}
        self._warned_fts_only = False
        self._last_cleanup: dict[str, float] = {}

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        embedder_id: str | None,
        dimension: int | None,
        read_only: bool = False,
    ) -> IndexStore:
        """Open (creating or rebuilding as needed) the index in `directory`.

        `embedder_id=None` is full-text only mode: no vectors are stored and hybrid search is
        full-text search. A read-only store never writes: where a writer would rebuild, it raises
        `IndexNotReady` instead.
        """
        if embedder_id is not None and (dimension is None or dimension <= 0):
            raise ValueError(f"an embedder needs a positive vector dimension, got {dimension!r}")
        if embedder_id is None:
            dimension = None
        directory = Path(directory)
        if read_only and not (directory / META_FILE).is_file():
            raise IndexNotReady(
                f"no index in {directory} yet; it is created by `swarm-lsp index` or the server"
            )
        directory.mkdir(parents=True, exist_ok=True)
        db = lancedb.connect(str(directory), read_consistency_interval=timedelta(seconds=1))
        store = cls(directory, db, embedder_id=embedder_id, dimension=dimension, read_only=read_only)
        store._open_tables()
        return store

    @classmethod
    def for_workspace(
        cls, root: Path, *, embedder_id: str | None, dimension: int | None, read_only: bool = False
    ) -> IndexStore:
        """The index of the workspace at `root`, in the platform cache dir (never inside the repository)."""
        return cls.open(
            workspace_data_dir(root) / "index",
            embedder_id=embedder_id,
            dimension=dimension,
            read_only=read_only,
        )

    @property
    def vector_search_available(self) -> bool:
        return self.embedder_id is not None

    def _schemas(self) -> dict[str, pa.Schema]:
        return {
            FILES: _files_schema(),
            SYMBOLS: _symbols_schema(),
            CHUNKS: _chunks_schema(self.dimension),
            REFERENCES: _references_schema(),
        }

    def _open_tables(self) -> None:
        meta = _read_meta(self.directory / META_FILE)
        existing = set(self._db.list_tables().tables)
        schemas = self._schemas()
        reason = self._rebuild_reason(meta, existing, schemas)
        if reason is not None and self.read_only:
            raise IndexNotReady(
                f"the index in {self.directory} needs rebuilding ({reason}); "
                "the process that writes it rebuilds it when it opens it"
            )
        if reason is not None or not existing.intersection(DATA_TABLES):
            if reason is not None:
                logger.warning("rebuilding the index in %s: %s", self.directory, reason)
            self.rebuilt_reason = reason
            for name in DATA_TABLES:
                mode = "overwrite" if name in existing else "create"
                self._tables[name] = self._db.create_table(name, schema=schemas[name], mode=mode)
            meta = {
                "schema_version": SCHEMA_VERSION,
                "embedder_id": self.embedder_id,
                "dimension": self.dimension,
                "created_at": time.time(),
                "updated_at": None,
            }
            # Written last: a crash before this line leaves the old metadata, so the next open rebuilds again.
            _write_meta(self.directory / META_FILE, meta)
        self._meta = dict(meta or {})
        self._open_cache(existing)
        if not self.read_only:
            self._ensure_fts_index()
            self._recover()

    def _recover(self) -> None:
        journal = self.directory / JOURNAL_FILE
        pending = _read_meta(journal)
        if pending is None:
            journal.unlink(missing_ok=True)  # absent, or torn before its fsync: nothing was committed
            return
        paths = [path for path in pending.get("paths", []) if isinstance(path, str)]
        if paths and self.rebuilt_reason is None:
            logger.warning("removing %d file(s) an interrupted write left half-indexed", len(paths))
            self._delete_rows(paths)
            self.recovered_paths = paths
        journal.unlink()

    def _rebuild_reason(
        self, meta: dict[str, Any] | None, existing: set[str], schemas: dict[str, pa.Schema]
    ) -> str | None:
        if meta is None:
            if existing.intersection(DATA_TABLES):
                return "its metadata file was missing or unreadable"
            return None
        if meta.get("schema_version") != SCHEMA_VERSION:
            return f"the index format changed (version {meta.get('schema_version')} -> {SCHEMA_VERSION})"
        if meta.get("embedder_id") != self.embedder_id:
            old = meta.get("embedder_id") or "none (full-text only)"
            new = self.embedder_id or "none (full-text only)"
            return f"the embedder changed ({old} -> {new})"
        if meta.get("dimension") != self.dimension:
            return f"the embedding dimension changed ({meta.get('dimension')} -> {self.dimension})"
        for name in DATA_TABLES:
            if name not in existing:
                return f"the {name} table was missing"
            try:
                table = self._db.open_table(name)
                schema = table.schema
            except Exception as error:  # any damage means the same thing: rebuild
                return f"the {name} table could not be opened ({error})"
            if not schema.equals(schemas[name], check_metadata=False):
                return f"the {name} table did not have the expected columns"
            self._tables[name] = table
        return None

    def _open_cache(self, existing: set[str]) -> None:
        schema = _cache_schema()
        table = None
        if EMBEDDING_CACHE in existing:
            try:
                table = self._db.open_table(EMBEDDING_CACHE)
                if not table.schema.equals(schema, check_metadata=False):
                    table = None
            except Exception:  # an unreadable cache is only lost work: start a new one
                table = None
        if table is None:
            if self.read_only:
                raise IndexNotReady(f"the embedding cache in {self.directory} is not ready")
            mode = "overwrite" if EMBEDDING_CACHE in existing else "create"
            table = self._db.create_table(EMBEDDING_CACHE, schema=schema, mode=mode)
        self._tables[EMBEDDING_CACHE] = table

    def _ensure_fts_index(self) -> None:
        chunks = self._tables[CHUNKS]
        if _index_name(chunks, FTS_COLUMN) is None:
            # Stemming and stop words help natural-language questions; "_" already splits tokens.
            chunks.create_index(FTS_COLUMN, config=FTS(with_position=False), replace=True)

    # ------------------------------------------------------------------ writes

    def replace_files(self, parsed: Sequence[ParsedFile], vectors: Mapping[str, Any] | None = None) -> None:
        """Replace every row of these files in every table: one merge_insert per table for the batch.

        `vectors` maps chunk_id -> embedding for chunks embedded already; the others take their
        vector from the embedding cache when it has one and are left for `chunks_missing_vectors`
        otherwise. Given vectors are also cached.
        """
        self._check_writable()
        if not parsed:
            return
        by_path = {item.record.path: item for item in parsed}  # a path given twice: the last wins
        batch = list(by_path.values())
        _check_paths(batch)
        paths = list(by_path)
        now = time.time()
        chunks = list({chunk.chunk_id: chunk for item in batch for chunk in item.chunks}.values())
        # Everything that can fail on bad input happens before the journal and the first commit.
        chunk_vectors = self._vectors_for(chunks, vectors or {})
        tables = [
            (REFERENCES, "id", _reference_table(batch)),
            (SYMBOLS, "id", _symbol_table(batch)),
            (CHUNKS, "chunk_id", _chunk_table(chunks, chunk_vectors, self.dimension)),
            (FILES, "path", _file_table(batch, now)),  # last: see "Crash safety" in the module docstring
        ]
        with self._write_lock, self._journal(paths):
            for name, key, data in tables:
                self._replace(name, key, data, paths)
            self._touch(now)

    def touch_files(self, stats: Mapping[str, tuple[int, int]]) -> None:
        """Record a new (size, mtime_ns) for files whose content (sha256) did not change.

        A checkout or a save without edits changes only the stat; one merge for the whole batch
        keeps the next scan from hashing those files again.
        """
        self._check_writable()
        if not stats:
            return
        paths = list(stats)
        rows = self._select(FILES, _path_in(paths), [field.name for field in _files_schema()]).to_pylist()
        for row in rows:
            row["size"], row["mtime_ns"] = stats[row["path"]]
        if not rows:
            return
        data = pa.Table.from_pylist(rows, schema=_files_schema())
        with self._write_lock:
            self._tables[FILES].merge_insert("path").when_matched_update_all().execute(data)
            self._touch(time.time())

    def delete_files(self, paths: Iterable[str]) -> None:
        """Remove every row of these files; the files rows go last, so a crash leaves them to retry."""
        self._check_writable()
        paths = list(dict.fromkeys(paths))
        if not paths:
            return
        with self._write_lock, self._journal(paths):
            self._delete_rows(paths)
            self._touch(time.time())

    def _delete_rows(self, paths: list[str]) -> None:
        for name in (REFERENCES, SYMBOLS, CHUNKS, FILES):  # files last, as in replace_files
            for group in _groups(paths, _IN_LIST_SIZE):
                self._tables[name].delete(_path_in(group))

    @contextlib.contextmanager
    def _journal(self, paths: list[str]) -> Iterator[None]:
        """Record the paths of a multi-table write until it has fully committed (see "Crash safety")."""
        journal = self.directory / JOURNAL_FILE
        _write_meta(journal, {"paths": paths})
        try:
            yield
        except BaseException:
            # Some tables may hold the new rows and others not: remove them all now if we can,
            # otherwise the journal stays and the next open does it.
            with contextlib.suppress(Exception):
                self._delete_rows(paths)
                journal.unlink()
            raise
        journal.unlink(missing_ok=True)

    def set_vectors(self, vectors: Mapping[str, Any]) -> int:
        """Fill in embeddings of existing chunks (chunk_id -> vector); returns how many chunks got one.

        Chunks that no longer exist are skipped. The vectors go to the embedding cache first, so
        a crash in between costs nothing. Each call is two commits: pass a few hundred at a time.
        """
        self._check_writable()
        if not vectors:
            return 0
        dimension = self._require_dimension()
        ids = list(vectors)
        values = [_as_vector(vectors[chunk_id], dimension) for chunk_id in ids]
        data = pa.table(
            {
                "chunk_id": pa.array(ids, pa.string()),
                VECTOR_COLUMN: _vector_array(values, dimension),
                "has_vector": pa.array([True] * len(ids), pa.bool_()),
            }
        )
        with self._write_lock:
            hashes = self._text_hashes(ids)
            self._cache(
                {
                    hashes[chunk_id]: vector
                    for chunk_id, vector in zip(ids, values, strict=True)
                    if chunk_id in hashes
                }
            )
            result = (
                self._tables[CHUNKS]
                .merge_insert("chunk_id")
                .when_matched_update_all()
                .execute(data, on_bad_vectors="null")
            )
            self._touch(time.time())
        return int(result.num_updated_rows)

    def cache_vectors(self, vectors: Mapping[str, Any]) -> None:
        """Remember embeddings by chunk text hash for this embedder (text_hash -> vector)."""
        self._check_writable()
        if self.embedder_id is None or not vectors:
            return
        dimension = self._require_dimension()
        with self._write_lock:
            self._cache({text_hash: _as_vector(v, dimension) for text_hash, v in vectors.items()})

    def remove_orphans(self) -> list[str]:
        """Delete rows whose file has no `files` row; returns their paths. The journal should leave none."""
        self._check_writable()
        with self._write_lock:
            known = set(self._column(FILES, "path"))
            orphans: set[str] = set()
            for name in (REFERENCES, SYMBOLS, CHUNKS):
                orphans.update(set(self._column(name, "path")) - known)
            if orphans:
                for name in (REFERENCES, SYMBOLS, CHUNKS):
                    for group in _groups(sorted(orphans), _IN_LIST_SIZE):
                        self._tables[name].delete(_path_in(group))
                self._touch(time.time())
        return sorted(orphans)

    def _replace(self, name: str, key: str, data: pa.Table, paths: list[str]) -> None:
        (
            self._tables[name]
            .merge_insert(key)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(_path_in(paths))
            # Null vectors are "not embedded yet", not bad data; lancedb would reject them otherwise.
            .execute(data, on_bad_vectors="null")
        )

    def _vectors_for(self, chunks: list[Chunk], given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.embedder_id is None:
            return {}
        dimension = self._require_dimension()
        result = {
            chunk.chunk_id: _as_vector(given[chunk.chunk_id], dimension)
            for chunk in chunks
            if chunk.chunk_id in given
        }
        missing = [chunk for chunk in chunks if chunk.chunk_id not in result]
        cached = self.cached_vectors(chunk.text_hash for chunk in missing)
        for chunk in missing:
            if chunk.text_hash in cached:
                result[chunk.chunk_id] = cached[chunk.text_hash]
        fresh = {chunk.text_hash: result[chunk.chunk_id] for chunk in chunks if chunk.chunk_id in given}
        if fresh:
            with self._write_lock:
                self._cache(fresh)
        return result

    def _cache(self, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors or self.embedder_id is None:
            return
        hashes = list(vectors)
        data = pa.table(
            {
                "key": pa.array([_cache_key(self.embedder_id, h) for h in hashes], pa.string()),
                "embedder_id": pa.array([self.embedder_id] * len(hashes), pa.string()),
                "text_hash": pa.array(hashes, pa.string()),
                "dimension": pa.array([len(vectors[h]) for h in hashes], pa.int32()),
                "vector": pa.array([vectors[h].astype("<f4").tobytes() for h in hashes], pa.binary()),
            }
        )
        # Insert-if-absent: the same (embedder, text) always gives the same vector.
        self._tables[EMBEDDING_CACHE].merge_insert("key").when_not_matched_insert_all().execute(data)

    def _touch(self, when: float) -> None:
        self._meta["updated_at"] = when
        _write_meta(self.directory / META_FILE, self._meta)

    def _check_writable(self) -> None:
        """Called before every write: refuses a read-only store, and drops the no-change manifest
        (index/manifest.py) so a write that is interrupted can never leave a stale one."""
        if self.read_only:
            raise IndexStoreError(
                "this index was opened read-only; only the process holding the lock writes it"
            )
        manifest.invalidate(self.directory.parent)

    def _require_dimension(self) -> int:
        if self.dimension is None:
            raise VectorSearchUnavailable(
                "this index is full-text only (no embedder is configured), so it stores no vectors"
            )
        return self.dimension

    # ---------------------------------------------------------------- embedding

    def cached_vectors(self, text_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached embeddings of this embedder for these chunk text hashes (text_hash -> vector)."""
        if self.embedder_id is None:
            return {}
        hashes = list(dict.fromkeys(text_hashes))
        found: dict[str, np.ndarray] = {}
        for group in _groups(hashes, _IN_LIST_SIZE):
            keys = [_cache_key(self.embedder_id, h) for h in group]
            rows = self._select(EMBEDDING_CACHE, col("key").isin(keys), ["text_hash", "dimension", "vector"])
            for text_hash, dimension, blob in zip(
                rows.column("text_hash").to_pylist(),
                rows.column("dimension").to_pylist(),
                rows.column("vector").to_pylist(),
                strict=True,
            ):
                if dimension == self.dimension:
                    found[text_hash] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return found

    def chunks_missing_vectors(self, limit: int, priority_paths: Sequence[str] = ()) -> list[PendingChunk]:
        """Up to `limit` chunks without a vector, those of `priority_paths` (open editors) first."""
        if self.embedder_id is None or limit <= 0:
            return []
        columns = ["chunk_id", "text", "text_hash"]
        missing = col("has_vector") == lit(False)
        result: dict[str, PendingChunk] = {}
        if priority_paths:
            rows = self._select(CHUNKS, missing & _path_in(list(priority_paths)), columns, limit=limit)
            for row in rows.to_pylist():
                result[row["chunk_id"]] = PendingChunk(row["chunk_id"], row["text"], row["text_hash"])
        if len(result) < limit:
            rows = self._select(CHUNKS, missing, columns, limit=limit + len(result))
            for row in rows.to_pylist():
                if len(result) >= limit:
                    break
                result.setdefault(
                    row["chunk_id"], PendingChunk(row["chunk_id"], row["text"], row["text_hash"])
                )
        return list(result.values())

    def _text_hashes(self, chunk_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for group in _groups(chunk_ids, _IN_LIST_SIZE):
            rows = self._select(CHUNKS, col("chunk_id").isin(group), ["chunk_id", "text_hash"])
            ids, hashes = rows.column("chunk_id").to_pylist(), rows.column("text_hash").to_pylist()
            found.update(zip(ids, hashes, strict=True))
        return found

    # ------------------------------------------------------------------ search

    def search_fts(self, query: str, k: int = 10, filter: SearchFilter | None = None) -> list[ChunkHit]:
        """Chunks ranked by BM25 over text, path and symbol, identifiers split (see the module docstring)."""
        text = _fts_query(query)
        if not text or k <= 0:
            return []
        builder = (
            self._tables[CHUNKS]
            .search(text, query_type="fts", fts_columns=FTS_COLUMN)
            .select([*_HIT_COLUMNS, "_score"])
            .limit(k)
        )
        where = _filter_expr(filter)
        if where is not None:
            builder = builder.where(where, prefilter=True)
        hits = []
        for row in builder.to_arrow().to_pylist():
            score = float(row.pop("_score"))
            hits.append(ChunkHit(**row, score=score, modes=frozenset({"fts"}), fts_score=score))
        return hits

    def search_vector(self, vector: Any, k: int = 10, filter: SearchFilter | None = None) -> list[ChunkHit]:
        """Chunks nearest to `vector` by cosine distance; chunks without a vector are not candidates."""
        if self.embedder_id is None:
            raise VectorSearchUnavailable(
                "vector search needs an embedder; this index is full-text only. "
                "Configure an embedder or use full-text search."
            )
        if k <= 0:
            return []
        query = _as_vector(vector, self._require_dimension())
        builder = (
            self._tables[CHUNKS]
            .search(query, query_type="vector", vector_column_name=VECTOR_COLUMN)
            .distance_type("cosine")
            .select([*_HIT_COLUMNS, "_distance"])
            .limit(k)
        )
        where = _filter_expr(filter)
        if where is not None:
            builder = builder.where(where, prefilter=True)
        hits = []
        for row in builder.to_arrow().to_pylist():
            distance = float(row.pop("_distance"))
            hits.append(
                ChunkHit(**row, score=1.0 - distance, modes=frozenset({"vector"}), vector_distance=distance)
            )
        return hits

    def search_hybrid(
        self, query: str, vector: Any | None, k: int = 10, filter: SearchFilter | None = None
    ) -> list[ChunkHit]:
        """Full-text and vector results fused by reciprocal rank; chunks without vectors still rank by text.

        With no vector (the query is not embedded yet) or no embedder, this is full-text search
        scored by RRF; the full-text-only case is logged once.
        """
        depth = max(k * 4, 50)
        ranked = [self.search_fts(query, depth, filter)]
        if vector is not None and self.embedder_id is not None:
            ranked.append(self.search_vector(vector, depth, filter))
        elif self.embedder_id is None and not self._warned_fts_only:
            self._warned_fts_only = True
            logger.warning("no embedder is configured: hybrid search uses full-text search only")
        return _fuse(ranked, k)

    # ------------------------------------------------------------------- reads

    def files(self) -> dict[str, IndexedFile]:
        columns = ["path", "language", "size", "mtime_ns", "sha256", "indexed_at"]
        rows = self._select(FILES, None, columns)
        return {row["path"]: IndexedFile(**row) for row in rows.to_pylist()}

    def file_record(self, path: str) -> FileRecord | None:
        columns = ["path", "language", "size", "mtime_ns", "sha256", "outline"]
        rows = self._select(FILES, col("path") == lit(path), columns).to_pylist()
        return FileRecord(**rows[0]) if rows else None

    def outline(self, path: str) -> str | None:
        rows = self._select(FILES, col("path") == lit(path), ["outline"]).to_pylist()
        return rows[0]["outline"] if rows else None

    def chunks(self, path: str) -> list[Chunk]:
        columns = ["path", "start_line", "end_line", "symbol", "kind", "language", "text"]
        rows = self._select(CHUNKS, col("path") == lit(path), columns).to_pylist()
        return sorted((Chunk(**row) for row in rows), key=lambda chunk: (chunk.start_line, chunk.end_line))

    def symbols(self, path: str | None = None, name: str | None = None) -> list[Symbol]:
        conditions = []
        if path is not None:
            conditions.append(col("path") == lit(path))
        if name is not None:
            conditions.append(col("name") == lit(name))
        return self._symbols(_all_of(conditions))

    def find_symbol(self, name: str) -> list[Symbol]:
        """Definitions whose name or qualified name is exactly `name` ("get_json" or "Request.get_json")."""
        return self._symbols((col("name") == lit(name)) | (col("qualified_name") == lit(name)))

    def references(self, name: str | None = None, path: str | None = None) -> list[Reference]:
        conditions = []
        if name is not None:
            conditions.append(col("name") == lit(name))
        if path is not None:
            conditions.append(col("path") == lit(path))
        rows = self._select(REFERENCES, _all_of(conditions), ["path", "name", "line", "kind"]).to_pylist()
        return sorted((Reference(**row) for row in rows), key=lambda ref: (ref.path, ref.line, ref.name))

    def _symbols(self, where: Expr | None) -> list[Symbol]:
        columns = [field.name for field in _symbols_schema() if field.name != "id"]
        rows = self._select(SYMBOLS, where, columns).to_pylist()
        return sorted((Symbol(**row) for row in rows), key=lambda s: (s.path, s.start_line, s.qualified_name))

    def _select(
        self, name: str, where: Expr | None, columns: list[str], limit: int | None = None
    ) -> pa.Table:
        builder = self._tables[name].search().select(columns)
        if where is not None:
            builder = builder.where(where)
        if limit is not None:
            builder = builder.limit(limit)
        return builder.to_arrow()

    def _column(self, name: str, column: str) -> list[Any]:
        return pc.unique(self._select(name, None, [column]).column(column)).to_pylist()

    # ------------------------------------------------------------- maintenance

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
            disk_bytes=_disk_bytes(self.directory),
            fragments=fragments,
            versions=versions,
            fts_unindexed_rows=self._unindexed_rows(FTS_COLUMN),
            vector_index=_index_name(tables[CHUNKS], VECTOR_COLUMN) is not None,
        )

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

    def create_vector_index_if_needed(self, min_rows: int = VECTOR_INDEX_MIN_ROWS) -> bool:
        """Build the IVF-PQ vector index once `min_rows` chunks have vectors; returns whether it did.

        Later vectors are searched exactly until `maybe_optimize` folds them in.
        """
        self._check_writable()
        if self.embedder_id is None or self.dimension is None:
            return False
        chunks = self._tables[CHUNKS]
        with self._write_lock:
            if _index_name(chunks, VECTOR_COLUMN) is not None:
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
        name = _index_name(chunks, column)
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
            [_cache_key(self.embedder_id, h) for h in self._column(CHUNKS, "text_hash")], pa.string()
        )
        everything = cache.to_arrow()
        kept = everything.filter(pc.is_in(everything.column("key"), value_set=used))
        # One atomic overwrite; other embedders' vectors go too (they would be re-embedded on a switch).
        self._tables[EMBEDDING_CACHE] = self._db.create_table(
            EMBEDDING_CACHE, data=kept, schema=_cache_schema(), mode="overwrite"
        )
        return total - kept.num_rows


# ---------------------------------------------------------------------- schemas


def _files_schema() -> pa.Schema:
    return pa.schema(
        [
            ("path", pa.string()),
            ("language", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("sha256", pa.string()),
            ("outline", pa.string()),
            ("indexed_at", pa.float64()),
        ]
    )


def _symbols_schema() -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("path", pa.string()),
            ("name", pa.string()),
            ("qualified_name", pa.string()),
            ("kind", pa.string()),
            ("parent", pa.string()),
            ("start_line", pa.int32()),
            ("end_line", pa.int32()),
            ("signature", pa.string()),
            ("docstring", pa.string()),
        ]
    )


def _chunks_schema(dimension: int | None) -> pa.Schema:
    fields = [
        ("chunk_id", pa.string()),
        ("path", pa.string()),
        ("start_line", pa.int32()),
        ("end_line", pa.int32()),
        ("symbol", pa.string()),
        ("kind", pa.string()),
        ("language", pa.string()),
        ("text", pa.string()),
        ("text_hash", pa.string()),
        (FTS_COLUMN, pa.string()),
    ]
    if dimension is not None:
        fields.append((VECTOR_COLUMN, pa.list_(pa.float32(), dimension)))
    fields.append(("has_vector", pa.bool_()))
    return pa.schema(fields)


def _references_schema() -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("path", pa.string()),
            ("name", pa.string()),
            ("line", pa.int32()),
            ("kind", pa.string()),
        ]
    )


def _cache_schema() -> pa.Schema:
    # Vectors as raw float32 bytes: one table holds every embedder's vectors whatever their dimension.
    return pa.schema(
        [
            ("key", pa.string()),
            ("embedder_id", pa.string()),
            ("text_hash", pa.string()),
            ("dimension", pa.int32()),
            ("vector", pa.binary()),
        ]
    )


# ------------------------------------------------------------------- row building


def _file_table(batch: list[ParsedFile], now: float) -> pa.Table:
    rows = [
        {
            "path": item.record.path,
            "language": item.record.language,
            "size": item.record.size,
            "mtime_ns": item.record.mtime_ns,
            "sha256": item.record.sha256,
            "outline": item.record.outline,
            "indexed_at": now,
        }
        for item in batch
    ]
    return pa.Table.from_pylist(rows, schema=_files_schema())


def _check_paths(batch: list[ParsedFile]) -> None:
    """Rows are replaced by their file's path, so a row under another path would never be replaced."""
    for item in batch:
        for row in (*item.symbols, *item.chunks, *item.references):
            if row.path != item.record.path:
                raise ValueError(f"{row!r} says its file is {row.path}, but it came with {item.record.path}")


def _symbol_table(batch: list[ParsedFile]) -> pa.Table:
    rows: dict[str, dict[str, Any]] = {}
    for item in batch:
        for symbol in item.symbols:
            key = _key(symbol.path, symbol.qualified_name, symbol.kind, symbol.start_line, symbol.end_line)
            rows[key] = {
                "id": key,
                "path": symbol.path,
                "name": symbol.name,
                "qualified_name": symbol.qualified_name,
                "kind": symbol.kind,
                "parent": symbol.parent,
                "start_line": symbol.start_line,
                "end_line": symbol.end_line,
                "signature": symbol.signature,
                "docstring": symbol.docstring,
            }
    return pa.Table.from_pylist(list(rows.values()), schema=_symbols_schema())


def _reference_table(batch: list[ParsedFile]) -> pa.Table:
    rows: dict[str, dict[str, Any]] = {}
    for item in batch:
        for ref in item.references:
            key = _key(ref.path, ref.name, ref.line, ref.kind)
            rows[key] = {"id": key, "path": ref.path, "name": ref.name, "line": ref.line, "kind": ref.kind}
    return pa.Table.from_pylist(list(rows.values()), schema=_references_schema())


def _chunk_table(chunks: list[Chunk], vectors: Mapping[str, np.ndarray], dimension: int | None) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "chunk_id": pa.array([c.chunk_id for c in chunks], pa.string()),
        "path": pa.array([c.path for c in chunks], pa.string()),
        "start_line": pa.array([c.start_line for c in chunks], pa.int32()),
        "end_line": pa.array([c.end_line for c in chunks], pa.int32()),
        "symbol": pa.array([c.symbol for c in chunks], pa.string()),
        "kind": pa.array([c.kind for c in chunks], pa.string()),
        "language": pa.array([c.language for c in chunks], pa.string()),
        "text": pa.array([c.text for c in chunks], pa.string()),
        "text_hash": pa.array([c.text_hash for c in chunks], pa.string()),
        FTS_COLUMN: pa.array([search_text(c) for c in chunks], pa.string()),
    }
    if dimension is not None:
        columns[VECTOR_COLUMN] = _vector_array([vectors.get(c.chunk_id) for c in chunks], dimension)
    columns["has_vector"] = pa.array([c.chunk_id in vectors for c in chunks], pa.bool_())
    return pa.table(columns, schema=_chunks_schema(dimension))


def _vector_array(vectors: Sequence[np.ndarray | None], dimension: int) -> pa.Array:
    values = np.zeros((len(vectors), dimension), dtype=np.float32)
    mask = np.ones(len(vectors), dtype=bool)
    for i, vector in enumerate(vectors):
        if vector is not None:
            values[i] = vector
            mask[i] = False
    flat = pa.array(values.reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dimension, mask=pa.array(mask))


def _as_vector(value: Any, dimension: int) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dimension:
        raise ValueError(f"expected a vector of {dimension} numbers, got {vector.shape[0]}")
    if not np.all(np.isfinite(vector)):
        raise ValueError("the vector contains NaN or infinite values")
    return vector


def _sub_vectors(dimension: int) -> int:
    """PQ sub-vectors: lancedb's default of dimension/16 where it divides, else the largest divisor below."""
    target = max(1, dimension // 16)
    return next(n for n in range(target, 0, -1) if dimension % n == 0)


def _key(*parts: object) -> str:
    return hashlib.sha256(
        "\0".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
    ).hexdigest()[:32]


def _cache_key(embedder_id: str, text_hash: str) -> str:
    return f"{embedder_id}|{text_hash}"  # unambiguous: the hash is a fixed-length hex suffix


# ---------------------------------------------------------------------- full text

_CAMEL_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Only compound identifiers need expanding; matching just those keeps this at C speed on plain words.
_SNAKE_CASE = re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]+_[A-Za-z0-9])[A-Za-z0-9]+(?:_+[A-Za-z0-9]+)+")
_CAMEL_CASE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]*(?:[a-z0-9][A-Z]|[A-Z][A-Z][a-z])[A-Za-z0-9]*")


def split_identifier(identifier: str) -> list[str]:
    """The words of an identifier: "parseHTTPRequest" -> parse, HTTP, Request; "get_json" -> get, json."""
    return [part for piece in identifier.split("_") for part in _CAMEL_PART.findall(piece)]


def _identifier_expansions(text: str) -> list[str]:
    # get_json -> getjson, to match a query "getJson" (the tokenizer already splits on "_")
    joined = [word.replace("_", "").lower() for word in dict.fromkeys(_SNAKE_CASE.findall(text))]
    # getJson -> get Json, to match "get json" and "get_json"
    split = [" ".join(_CAMEL_PART.findall(word)) for word in dict.fromkeys(_CAMEL_CASE.findall(text))]
    return joined + split


def search_text(chunk: Chunk) -> str:
    """What the full-text index sees for a chunk: path, symbol, text and the identifier expansions."""
    head = f"{chunk.path} {chunk.symbol or ''}"
    expansions = _identifier_expansions(f"{head}\n{chunk.text}")
    return f"{head}\n{chunk.text}\n{' '.join(expansions)}"


def _fts_query(query: str) -> str:
    query = query.strip()
    if not query:
        return ""
    expansions = _identifier_expansions(query)
    return f"{query} {' '.join(expansions)}" if expansions else query


# ------------------------------------------------------------------------ helpers


def _fuse(ranked_lists: list[list[ChunkHit]], k: int) -> list[ChunkHit]:
    """Reciprocal-rank fusion; ties go to the better best rank, then the chunk id (stable output)."""
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    merged: dict[str, dict[str, Any]] = {}
    for hits in ranked_lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            best_rank[hit.chunk_id] = min(best_rank.get(hit.chunk_id, rank), rank)
            entry = merged.setdefault(hit.chunk_id, {"hit": hit, "modes": set()})
            entry["modes"].update(hit.modes)
            if hit.fts_score is not None:
                entry["fts_score"] = hit.fts_score
            if hit.vector_distance is not None:
                entry["vector_distance"] = hit.vector_distance
    order = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], best_rank[chunk_id], chunk_id))
    fused = []
    for chunk_id in order[:k]:
        entry = merged[chunk_id]
        hit: ChunkHit = entry["hit"]
        fused.append(
            ChunkHit(
                chunk_id=hit.chunk_id,
                path=hit.path,
                start_line=hit.start_line,
                end_line=hit.end_line,
                symbol=hit.symbol,
                kind=hit.kind,
                language=hit.language,
                text=hit.text,
                score=scores[chunk_id],
                modes=frozenset(entry["modes"]),
                fts_score=entry.get("fts_score"),
                vector_distance=entry.get("vector_distance"),
            )
        )
    return fused


def _path_in(paths: Sequence[str]) -> Expr:
    # Expressions, not SQL text: any path (quotes, unicode, newlines) is a literal.
    return col("path") == lit(paths[0]) if len(paths) == 1 else col("path").isin(list(paths))


def _all_of(conditions: list[Expr]) -> Expr | None:
    if not conditions:
        return None
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined & condition
    return combined


def _filter_expr(search_filter: SearchFilter | None) -> Expr | None:
    if search_filter is None:
        return None
    conditions = []
    if search_filter.paths is not None:
        if not search_filter.paths:
            return col("path") != col("path")  # matches nothing
        conditions.append(_path_in(list(search_filter.paths)))
    if search_filter.path_prefix:
        prefix = search_filter.path_prefix
        # A prefix range: UTF-8 byte order is code point order, and U+10FFFF is the last code point.
        conditions.append((col("path") >= lit(prefix)) & (col("path") < lit(prefix + "\U0010ffff")))
    if search_filter.languages is not None:
        conditions.append(col("language").isin(list(search_filter.languages)))
    if search_filter.kinds is not None:
        conditions.append(col("kind").isin(list(search_filter.kinds)))
    return _all_of(conditions)


def _index_name(table: Any, column: str) -> str | None:
    for index in table.list_indices():
        if list(index.columns) == [column]:
            return str(index.name)
    return None


def _groups(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _disk_bytes(directory: Path) -> int:
    total = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:  # removed by a concurrent cleanup
                continue
    return total


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(dict(meta), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
