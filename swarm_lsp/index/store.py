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

Faults. A full disk raises `IndexDiskFull` (errors.py) with what to do. Deleting rows writes too, so
the store holds `space.reserve` (512 kB) and gives it up when a write fails on a full disk: the
failed batch's rows are removed at once and the index stays consistent; the reserve comes back with
the next write that has room. A table whose files are corrupted or missing is found at open (one
column of every table is read) and recreated empty, in a new folder if it cannot be overwritten;
found later (a read fails), it raises `IndexDamaged` and the indexer's next sync rebuilds it.

Long runs. A connection keeps every full-text index version it has read open, and each refresh
writes a new one; `reopen` starts a new connection (at most every REOPEN_AFTER_S, when the chunks
changed, and at once when a read names a version another process's cleanup removed).

The rest of the index lives beside this module: tables.py (schemas and rows), text_query.py (what
the full-text index sees and is asked), errors.py, disk.py (its small files and the space
reserve); and the three halves `IndexStore` is mixed from:
chunk_search.py (full-text, vector and fused search), vectors.py (the embedding cache, chunks
waiting for vectors) and maintenance.py (compaction, index refreshes, the vector index, pruning).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.expr import Expr, col, lit
from lancedb.index import FTS

from swarm_lsp.code.symbols import Reference, Symbol
from swarm_lsp.config import workspace_data_dir
from swarm_lsp.index import manifest
from swarm_lsp.index.chunk_search import (
    HIT_COLUMNS,
    IN_LIST_SIZE,
    ChunkHit,
    ChunkSearch,
    all_of,
    in_groups,
    path_in,
)
from swarm_lsp.index.disk import give_up_reserve, keep_reserve, read_json, write_json
from swarm_lsp.index.errors import IndexNotReady, IndexStoreError, explains_storage_errors, is_disk_full
from swarm_lsp.index.maintenance import Maintenance, index_name_of
from swarm_lsp.index.records import SCHEMA_VERSION, Chunk, FileRecord, ParsedFile
from swarm_lsp.index.tables import (
    CACHE_SCHEMA,
    CHUNKS,
    DATA_TABLES,
    EMBEDDING_CACHE,
    FILES,
    FILES_SCHEMA,
    FTS_COLUMN,
    REFERENCES,
    SYMBOLS,
    SYMBOLS_SCHEMA,
    check_paths,
    chunk_table,
    data_schemas,
    file_table,
    reference_table,
    symbol_table,
)
from swarm_lsp.index.vectors import VectorStore

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
JOURNAL_FILE = "pending.json"
# Lance caches index and manifest pages per connection, by default up to 6 GiB and 1 GiB. Each index
# refresh writes a new full-text index, so a server left running all day would fill them with old
# versions: bound them to what one workspace's current index needs.
INDEX_CACHE_BYTES = 256 * 1024 * 1024
METADATA_CACHE_BYTES = 64 * 1024 * 1024
REOPEN_AFTER_S = 60.0
"""How often at most the store opens a new connection to release old index versions (`reopen`)."""


@dataclass(frozen=True)
class IndexedFile:
    """What the indexer compares against the disk to decide whether a file changed."""

    path: str
    language: str
    size: int
    mtime_ns: int
    sha256: str
    indexed_at: float


class IndexStore(ChunkSearch, VectorStore, Maintenance):
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
        self._opened_at = time.monotonic()
        self._chunks_version_seen: int | None = None

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
        store = cls(
            directory, _connect(directory), embedder_id=embedder_id, dimension=dimension, read_only=read_only
        )
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

    @explains_storage_errors
    def _open_tables(self) -> None:
        meta = read_json(self.directory / META_FILE)
        existing = set(self._db.list_tables().tables)
        schemas = data_schemas(self.dimension)
        reason = self._rebuild_reason(meta, existing, schemas)
        if reason is not None and self.read_only:
            raise IndexNotReady(
                f"the index in {self.directory} needs rebuilding ({reason}); "
                "the process that writes it rebuilds it when it opens it"
            )
        if reason is not None or not existing.intersection(DATA_TABLES):
            meta = self._recreate_tables(reason, existing)
        self._meta = dict(meta or {})
        self._open_cache(existing)
        if not self.read_only:
            self._ensure_fts_index()
            self._recover()
            keep_reserve(self.directory)

    def reopen(self) -> None:
        """A new connection and new table handles. Lance keeps every full-text index version it has
        read open (files and cache) for the life of a connection, and each refresh writes a new one:
        bench/soak.py measured 4 file descriptors more per refresh, without end. Dropping the old
        connection releases them; it also forgets versions another process's cleanup removed."""
        with self._write_lock:
            self._db = _connect(self.directory)
            for name in list(self._tables):
                self._tables[name] = self._db.open_table(name)
            self._opened_at = time.monotonic()

    def _reopen_when_due(self) -> None:
        """Reopen (see `reopen`) at most every REOPEN_AFTER_S, and only when the chunks changed."""
        if time.monotonic() - self._opened_at < REOPEN_AFTER_S or CHUNKS not in self._tables:
            return
        version = self._tables[CHUNKS].version
        if self._chunks_version_seen is not None and version != self._chunks_version_seen:
            self.reopen()
        self._chunks_version_seen = version
        self._opened_at = time.monotonic()

    def rebuild(self, reason: str) -> None:
        """Recreate the data tables empty (the indexer then indexes every file again): for a table
        found damaged after open. The embedding cache is kept if it is readable."""
        self._check_writable()
        with self._write_lock:
            existing = set(self._db.list_tables().tables)
            self._meta = self._recreate_tables(reason, existing)
            self._ensure_fts_index()

    def _recreate_tables(self, reason: str | None, existing: set[str]) -> dict[str, Any]:
        if reason is not None:
            logger.warning("rebuilding the index in %s: %s", self.directory, reason)
        self.rebuilt_reason = reason
        schemas = data_schemas(self.dimension)
        for name in DATA_TABLES:
            self._tables[name] = self._create_table(name, schemas[name], existing)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "embedder_id": self.embedder_id,
            "dimension": self.dimension,
            "created_at": time.time(),
            "updated_at": None,
        }
        # Written last: a crash before this line leaves the old metadata, so the next open rebuilds again.
        write_json(self.directory / META_FILE, meta)
        return meta

    def _create_table(self, name: str, schema: pa.Schema, existing: set[str]) -> Any:
        """An empty table: a new version of the old one when it is readable (readers holding the old
        version keep working), else a new folder in place of the damaged one."""
        if name in existing:
            try:
                return self._db.create_table(name, schema=schema, mode="overwrite")
            except Exception as error:  # overwriting reads the old manifest; a damaged one cannot be
                logger.warning("replacing the damaged %s table in %s: %s", name, self.directory, error)
                shutil.rmtree(self.directory / f"{name}.lance", ignore_errors=True)
        return self._db.create_table(name, schema=schema, mode="create")

    def _recover(self) -> None:
        journal = self.directory / JOURNAL_FILE
        pending = read_json(journal)
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
            try:  # reading one column opens every data file: a missing, truncated or corrupted one fails
                table.search().select(["path"]).to_arrow()
            except Exception as error:
                return f"the {name} table could not be read ({error})"
            self._tables[name] = table
        return None

    def _open_cache(self, existing: set[str]) -> None:
        schema = CACHE_SCHEMA
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
            table = self._create_table(EMBEDDING_CACHE, schema, existing)
        self._tables[EMBEDDING_CACHE] = table

    def _ensure_fts_index(self) -> None:
        chunks = self._tables[CHUNKS]
        if index_name_of(chunks, FTS_COLUMN) is None:
            # Stemming and stop words help natural-language questions; "_" already splits tokens.
            chunks.create_index(FTS_COLUMN, config=FTS(with_position=False), replace=True)

    # ------------------------------------------------------------------ writes

    @explains_storage_errors
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
        check_paths(batch)
        paths = list(by_path)
        now = time.time()
        chunks = list({chunk.chunk_id: chunk for item in batch for chunk in item.chunks}.values())
        # Everything that can fail on bad input happens before the journal and the first commit.
        chunk_vectors = self._vectors_for(chunks, vectors or {})
        tables = [
            (REFERENCES, "id", reference_table(batch)),
            (SYMBOLS, "id", symbol_table(batch)),
            (CHUNKS, "chunk_id", chunk_table(chunks, chunk_vectors, self.dimension)),
            (FILES, "path", file_table(batch, now)),  # last: see "Crash safety" in the module docstring
        ]
        with self._write_lock, self._journal(paths):
            for name, key, data in tables:
                self._replace(name, key, data, paths)
            self._touch(now)

    @explains_storage_errors
    def touch_files(self, stats: Mapping[str, tuple[int, int]]) -> None:
        """Record a new (size, mtime_ns) for files whose content (sha256) did not change.

        A checkout or a save without edits changes only the stat; one merge for the whole batch
        keeps the next scan from hashing those files again.
        """
        self._check_writable()
        if not stats:
            return
        paths = list(stats)
        rows = self._select(FILES, path_in(paths), FILES_SCHEMA.names).to_pylist()
        for row in rows:
            row["size"], row["mtime_ns"] = stats[row["path"]]
        if not rows:
            return
        data = pa.Table.from_pylist(rows, schema=FILES_SCHEMA)
        with self._write_lock:
            self._tables[FILES].merge_insert("path").when_matched_update_all().execute(data)
            self._touch(time.time())

    @explains_storage_errors
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
            for group in in_groups(paths, IN_LIST_SIZE):
                self._tables[name].delete(path_in(group))

    @contextlib.contextmanager
    def _journal(self, paths: list[str]) -> Iterator[None]:
        """Record the paths of a multi-table write until it has fully committed (see "Crash safety")."""
        journal = self.directory / JOURNAL_FILE
        if journal.exists():
            # An earlier write of this process failed and could not clean up (a full disk): finish that first.
            self._recover()
        write_json(journal, {"paths": paths})
        try:
            yield
        except BaseException as error:
            # Some tables may hold the new rows and others not: remove them all now if we can,
            # otherwise the journal stays and the next open does it. Deleting writes too: on a
            # full disk the reserve is given up to make room for it.
            if is_disk_full(error):
                give_up_reserve(self.directory)
            with contextlib.suppress(Exception):
                self._delete_rows(paths)
                journal.unlink()
            raise
        journal.unlink(missing_ok=True)
        keep_reserve(self.directory)

    @explains_storage_errors
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
                    for group in in_groups(sorted(orphans), IN_LIST_SIZE):
                        self._tables[name].delete(path_in(group))
                self._touch(time.time())
        return sorted(orphans)

    def _replace(self, name: str, key: str, data: pa.Table, paths: list[str]) -> None:
        (
            self._tables[name]
            .merge_insert(key)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(path_in(paths))
            # Null vectors are "not embedded yet", not bad data; lancedb would reject them otherwise.
            .execute(data, on_bad_vectors="null")
        )

    def _touch(self, when: float) -> None:
        self._meta["updated_at"] = when
        write_json(self.directory / META_FILE, self._meta)

    def _check_writable(self) -> None:
        """Called before every write: refuses a read-only store, and drops the no-change manifest
        (index/manifest.py) so a write that is interrupted can never leave a stale one."""
        if self.read_only:
            raise IndexStoreError(
                "this index was opened read-only; only the process holding the lock writes it"
            )
        manifest.invalidate(self.directory.parent)

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
        return self._symbols(all_of(conditions))

    def find_symbol(self, name: str) -> list[Symbol]:
        """Definitions whose name or qualified name is exactly `name` ("get_json" or "Request.get_json")."""
        return self._symbols((col("name") == lit(name)) | (col("qualified_name") == lit(name)))

    def find_symbols(self, names: Sequence[str]) -> list[Symbol]:
        """Definitions named by any of `names` (exact names), in one query."""
        names = [name for name in dict.fromkeys(names) if name]
        return self._symbols(col("name").isin(names)) if names else []

    def definition_chunks(self, names: Sequence[str], limit: int = 50) -> list[ChunkHit]:
        """The chunks that define any of `names` (a name or a qualified name: "get_json",
        "Request.get_json"), at most `limit`, scored 0 (ranking gives them their weight)."""
        names = [name for name in dict.fromkeys(names) if name]
        if not names:
            return []
        where = col("name").isin(names) | col("qualified_name").isin(names)
        found = self._select(SYMBOLS, where, ["path", "qualified_name"], limit=limit).to_pylist()
        wanted = {(row["path"], row["qualified_name"]) for row in found}
        if not wanted:
            return []
        paths = sorted({path for path, _ in wanted})
        symbols = sorted({symbol for _, symbol in wanted})
        where = path_in(paths) & col("symbol").isin(symbols)
        rows = self._select(CHUNKS, where, list(HIT_COLUMNS), limit=limit * 4).to_pylist()
        hits = [
            ChunkHit(**row, score=0.0, modes=frozenset({"definition"}))
            for row in rows
            if (row["path"], row["symbol"]) in wanted
        ]
        return sorted(hits, key=lambda hit: (hit.path, hit.start_line))[:limit]

    def references(self, name: str | None = None, path: str | None = None) -> list[Reference]:
        conditions = []
        if name is not None:
            conditions.append(col("name") == lit(name))
        if path is not None:
            conditions.append(col("path") == lit(path))
        rows = self._select(REFERENCES, all_of(conditions), ["path", "name", "line", "kind"]).to_pylist()
        return sorted((Reference(**row) for row in rows), key=lambda ref: (ref.path, ref.line, ref.name))

    def _symbols(self, where: Expr | None) -> list[Symbol]:
        columns = [name for name in SYMBOLS_SCHEMA.names if name != "id"]
        rows = self._select(SYMBOLS, where, columns).to_pylist()
        return sorted((Symbol(**row) for row in rows), key=lambda s: (s.path, s.start_line, s.qualified_name))

    @explains_storage_errors
    def _select(
        self, name: str, where: Expr | None, columns: list[str], limit: int | None = None
    ) -> pa.Table:
        self._reopen_when_due()
        builder = self._tables[name].search().select(columns)
        if where is not None:
            builder = builder.where(where)
        if limit is not None:
            builder = builder.limit(limit)
        return builder.to_arrow()

    def _column(self, name: str, column: str) -> list[Any]:
        return pc.unique(self._select(name, None, [column]).column(column)).to_pylist()


# ------------------------------------------------------------------------ helpers


def _connect(directory: Path) -> Any:
    session = lancedb.Session(
        index_cache_size_bytes=INDEX_CACHE_BYTES, metadata_cache_size_bytes=METADATA_CACHE_BYTES
    )
    return lancedb.connect(str(directory), read_consistency_interval=timedelta(seconds=1), session=session)
