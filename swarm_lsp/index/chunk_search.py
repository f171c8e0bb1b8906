"""Searching the chunks table: by full text, by vector, and both fused by reciprocal rank, under a filter."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lancedb.expr import Expr, col, lit

from swarm_lsp.index.errors import VectorSearchUnavailable, explains_storage_errors
from swarm_lsp.index.tables import CHUNKS, FTS_COLUMN, VECTOR_COLUMN, as_vector
from swarm_lsp.index.text_query import fts_query

# The store's logger: what the store logs keeps one source, whichever of its modules says it.
logger = logging.getLogger("swarm_lsp.index.store")

RRF_K = 60
"""Reciprocal-rank fusion constant (Cormack et al.): score = sum of 1 / (RRF_K + rank)."""

IN_LIST_SIZE = 1_000
"""Keys per IN (...) filter when reading by key."""
HIT_COLUMNS = ["chunk_id", "path", "start_line", "end_line", "symbol", "kind", "language", "text"]


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


@dataclass(frozen=True)
class SearchFilter:
    """Restricts a search; every field that is set must hold."""

    paths: Sequence[str] | None = None
    path_prefix: str | None = None
    """A folder such as "src/"; plain text, not a pattern."""
    languages: Sequence[str] | None = None
    kinds: Sequence[str] | None = None


class ChunkSearch:
    """The search half of `IndexStore` (store.py), which it is mixed into: reads of its chunks table."""

    directory: Path
    embedder_id: str | None
    _tables: dict[str, Any]
    _warned_fts_only: bool
    _reopen_when_due: Callable[[], None]

    @explains_storage_errors
    def search_fts(self, query: str, k: int = 10, filter: SearchFilter | None = None) -> list[ChunkHit]:
        """Chunks ranked by BM25 over text, path and symbol, identifiers split (see the module docstring)."""
        text = fts_query(query)
        if not text or k <= 0:
            return []
        self._reopen_when_due()
        builder = (
            self._tables[CHUNKS]
            .search(text, query_type="fts", fts_columns=FTS_COLUMN)
            .select([*HIT_COLUMNS, "_score"])
            .limit(k)
        )
        hits = []
        for row in _rows(builder, filter):
            score = float(row.pop("_score"))
            hits.append(ChunkHit(**row, score=score, modes=frozenset({"fts"}), fts_score=score))
        return hits

    @explains_storage_errors
    def search_vector(self, vector: Any, k: int = 10, filter: SearchFilter | None = None) -> list[ChunkHit]:
        """Chunks nearest to `vector` by cosine distance; chunks without a vector are not candidates."""
        if self.embedder_id is None:
            raise VectorSearchUnavailable(
                "vector search needs an embedder; this index is full-text only. "
                "Configure an embedder or use full-text search."
            )
        if k <= 0:
            return []
        query = as_vector(vector, self._require_dimension())
        self._reopen_when_due()
        builder = (
            self._tables[CHUNKS]
            .search(query, query_type="vector", vector_column_name=VECTOR_COLUMN)
            .distance_type("cosine")
            .select([*HIT_COLUMNS, "_distance"])
            .limit(k)
        )
        hits = []
        for row in _rows(builder, filter):
            distance = float(row.pop("_distance"))
            hits.append(
                ChunkHit(**row, score=1.0 - distance, modes=frozenset({"vector"}), vector_distance=distance)
            )
        return hits

    @explains_storage_errors
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


def _rows(builder: Any, search_filter: SearchFilter | None) -> list[dict[str, Any]]:
    """The rows a search query finds, the filter applied before ranking."""
    where = _filter_expr(search_filter)
    if where is not None:
        builder = builder.where(where, prefilter=True)
    return builder.to_arrow().to_pylist()


def _fuse(ranked_lists: list[list[ChunkHit]], k: int) -> list[ChunkHit]:
    """Reciprocal-rank fusion; ties go to the better best rank, then the chunk id (stable output)."""
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    first_hit: dict[str, ChunkHit] = {}
    modes: dict[str, set[str]] = {}
    measures: dict[str, dict[str, float]] = {}
    for hits in ranked_lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            best_rank[hit.chunk_id] = min(best_rank.get(hit.chunk_id, rank), rank)
            first_hit.setdefault(hit.chunk_id, hit)
            modes.setdefault(hit.chunk_id, set()).update(hit.modes)
            found = measures.setdefault(hit.chunk_id, {})
            if hit.fts_score is not None:
                found["fts_score"] = hit.fts_score
            if hit.vector_distance is not None:
                found["vector_distance"] = hit.vector_distance
    order = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], best_rank[chunk_id], chunk_id))
    return [
        dataclasses.replace(
            first_hit[chunk_id],
            score=scores[chunk_id],
            modes=frozenset(modes[chunk_id]),
            fts_score=measures[chunk_id].get("fts_score"),
            vector_distance=measures[chunk_id].get("vector_distance"),
        )
        for chunk_id in order[:k]
    ]


def path_in(paths: Sequence[str]) -> Expr:
    # Expressions, not SQL text: any path (quotes, unicode, newlines) is a literal.
    return col("path") == lit(paths[0]) if len(paths) == 1 else col("path").isin(list(paths))


def all_of(conditions: list[Expr]) -> Expr | None:
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
        conditions.append(path_in(list(search_filter.paths)))
    if search_filter.path_prefix:
        prefix = search_filter.path_prefix
        # A prefix range: UTF-8 byte order is code point order, and U+10FFFF is the last code point.
        conditions.append((col("path") >= lit(prefix)) & (col("path") < lit(prefix + "\U0010ffff")))
    if search_filter.languages is not None:
        conditions.append(col("language").isin(list(search_filter.languages)))
    if search_filter.kinds is not None:
        conditions.append(col("kind").isin(list(search_filter.kinds)))
    return all_of(conditions)


def in_groups(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
