"""The index's vectors: the embedding cache (keyed by embedder and chunk text hash, so a text is
embedded once and a rebuild re-embeds nothing) and the chunks still waiting for a vector."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from lancedb.expr import col, lit

from swarm_lsp.index.chunk_search import IN_LIST_SIZE, in_groups, path_in
from swarm_lsp.index.errors import VectorSearchUnavailable, explains_storage_errors
from swarm_lsp.index.records import Chunk
from swarm_lsp.index.tables import (
    CHUNKS,
    EMBEDDING_CACHE,
    VECTOR_COLUMN,
    as_vector,
    cache_key,
    cache_table,
    vector_array,
)


class PendingChunk(NamedTuple):
    """A chunk that has no vector yet. Chunks can share a text (and its hash): embed each text once."""

    chunk_id: str
    text: str
    text_hash: str


class VectorStore:
    """The vector half of `IndexStore` (store.py), which it is mixed into: it works on the store's
    chunks and embedding cache tables under the store's write lock."""

    directory: Path
    embedder_id: str | None
    dimension: int | None
    _tables: dict[str, Any]
    _write_lock: threading.RLock

    @explains_storage_errors
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
        values = [as_vector(vectors[chunk_id], dimension) for chunk_id in ids]
        data = pa.table(
            {
                "chunk_id": pa.array(ids, pa.string()),
                VECTOR_COLUMN: vector_array(values, dimension),
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

    @explains_storage_errors
    def cache_vectors(self, vectors: Mapping[str, Any]) -> None:
        """Remember embeddings by chunk text hash for this embedder (text_hash -> vector)."""
        self._check_writable()
        if self.embedder_id is None or not vectors:
            return
        dimension = self._require_dimension()
        with self._write_lock:
            self._cache({text_hash: as_vector(v, dimension) for text_hash, v in vectors.items()})

    def _vectors_for(self, chunks: list[Chunk], given: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.embedder_id is None:
            return {}
        dimension = self._require_dimension()
        result = {
            chunk.chunk_id: as_vector(given[chunk.chunk_id], dimension)
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
        data = cache_table(self.embedder_id, vectors)
        # Insert-if-absent: the same (embedder, text) always gives the same vector.
        self._tables[EMBEDDING_CACHE].merge_insert("key").when_not_matched_insert_all().execute(data)

    def _require_dimension(self) -> int:
        if self.dimension is None:
            raise VectorSearchUnavailable(
                "this index is full-text only (no embedder is configured), so it stores no vectors"
            )
        return self.dimension

    def cached_vectors(self, text_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached embeddings of this embedder for these chunk text hashes (text_hash -> vector)."""
        if self.embedder_id is None:
            return {}
        hashes = list(dict.fromkeys(text_hashes))
        found: dict[str, np.ndarray] = {}
        for group in in_groups(hashes, IN_LIST_SIZE):
            keys = [cache_key(self.embedder_id, h) for h in group]
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
        """Up to `limit` chunks without a vector, those of `priority_paths` (open editors) first, in
        the order of `priority_paths` (the first path's chunks before the second's)."""
        if self.embedder_id is None or limit <= 0:
            return []
        columns = ["chunk_id", "text", "text_hash"]
        missing = col("has_vector") == lit(False)
        result: dict[str, PendingChunk] = {}
        if priority_paths:
            rank = {path: position for position, path in enumerate(dict.fromkeys(priority_paths))}
            # All their missing chunks (a few hundred files at most), then the first `limit` by rank:
            # a limit in the query would keep an arbitrary `limit` of them.
            rows = self._select(CHUNKS, missing & path_in(list(rank)), ["path", *columns]).to_pylist()
            rows.sort(key=lambda row: rank[row["path"]])
            for row in rows[:limit]:
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
        for group in in_groups(chunk_ids, IN_LIST_SIZE):
            rows = self._select(CHUNKS, col("chunk_id").isin(group), ["chunk_id", "text_hash"])
            ids, hashes = rows.column("chunk_id").to_pylist(), rows.column("text_hash").to_pylist()
            found.update(zip(ids, hashes, strict=True))
        return found
