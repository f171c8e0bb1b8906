"""Hierarchical retrieval: rank files, then the chunks inside them, then pack a cited context.

`search` is a flat chunk search (fts, vector or hybrid). `context_for` is what the swarm uses:
1. files are ranked by how well their chunks match the query (hybrid hits, summed with
   diminishing weight), by the repo graph (PageRank personalised to the matched and focus files:
   a file everything depends on matters), and by how recently they changed;
2. inside the top files, chunks are taken by match score, the focus range always first;
3. pieces are packed under the token budget, overlapping ranges merged, each cited path:start-end.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.index.chunk_search import ChunkHit
from swarm_lsp.index.graph import RepoGraph
from swarm_lsp.index.ranking import RankingRules, file_scores, rank, understand
from swarm_lsp.index.store import IndexStore
from swarm_lsp.models.embedding import Embedder
from swarm_lsp.swarm.context import ContextPack, ContextPiece, Focus

SearchMode = Literal["hybrid", "fts", "vector"]
CANDIDATE_HITS = 60
CANDIDATE_DEPTH = 50
"""Hits asked of each search (full text, vector) before ranking; at least 4 k."""
RECENT_WINDOW_S = 24 * 3600


@dataclass(frozen=True)
class SearchHit:
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    kind: str
    score: float
    text: str
    modes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def citation(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line}"


class Retriever:
    def __init__(self, store: IndexStore, embedder: Embedder | None) -> None:
        self.store = store
        self.embedder = embedder
        self._graph: RepoGraph | None = None
        self._graph_stamp: float | None = None

    # -------------------------------------------------------------------- search

    def search(
        self, query: str, k: int = 10, mode: SearchMode = "hybrid", rules: RankingRules | None = None
    ) -> list[SearchHit]:
        """The best `k` chunks for `query`, ranked by index/ranking.py under `rules` (all by default)."""
        if not query.strip():
            raise ValueError("the search query is empty; give some words or an identifier to look for")
        return [_hit(item) for item in self._chunk_hits(query, k, mode, rules or RankingRules())]

    def _chunk_hits(self, query: str, k: int, mode: SearchMode, rules: RankingRules) -> list[ChunkHit]:
        shape = understand(query)
        depth = max(k * 4, CANDIDATE_DEPTH)
        vectors: list[ChunkHit] = []
        if mode != "fts" and self.embedder is not None:
            vectors = self.store.search_vector(self.embedder.embed_query(query), depth)
        # Vector mode falls back to full text when there are no vectors to search.
        use_text = mode != "vector" or self.embedder is None
        texts = self.store.search_fts(query, depth) if use_text else []
        definitions = self.store.definition_chunks(shape.lookup_names) if rules.definitions else []
        return rank(shape, texts, vectors, definitions, k, rules)

    # ------------------------------------------------------------------- context

    def graph(self) -> RepoGraph:
        """The repo graph, rebuilt only when the index changed since it was built."""
        stamp = self.store.stats().updated_at
        if self._graph is None or stamp != self._graph_stamp:
            self._graph = RepoGraph.build(self.store.symbols(), self.store.references())
            self._graph_stamp = stamp
        return self._graph

    def rank_files(
        self, query: str, *, focus: Focus | None = None, hits: Sequence[ChunkHit] | None = None
    ) -> list[tuple[str, float]]:
        """Files by how well their chunks match (scored as the flat search orders them), by the repo
        graph (PageRank personalised to the matched and focus files) and by how recently they changed."""
        if hits is None:
            hits = self._chunk_hits(query, CANDIDATE_HITS, "hybrid", RankingRules())
        scored = file_scores(hits)
        top = max(scored.values(), default=1.0) or 1.0
        match = {path: score / top for path, score in scored.items()}
        personal = {path: 1.0 for path in match}
        if focus is not None:
            personal[focus.path] = personal.get(focus.path, 0.0) + 3.0
        graph_rank = self.graph().rank(personal or None)
        top_rank = max(graph_rank.values(), default=1.0) or 1.0
        files = self.store.files()
        now = time.time()
        scores: dict[str, float] = {}
        for path in set(match) | ({focus.path} if focus else set()):
            recency = 0.0
            record = files.get(path)
            if record is not None and record.mtime_ns > 0:
                age = now - record.mtime_ns / 1e9
                recency = max(0.0, 1.0 - age / RECENT_WINDOW_S)
            scores[path] = (
                match.get(path, 0.0)
                + 0.5 * graph_rank.get(path, 0.0) / top_rank
                + 0.1 * recency
                + (2.0 if focus is not None and path == focus.path else 0.0)
            )
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    def context_for(
        self, query: str, token_budget: int, focus: Focus | None = None, *, max_files: int = 8
    ) -> ContextPack:
        """A cited context under `token_budget` tokens (estimated), most relevant first."""
        hits = self._chunk_hits(query, CANDIDATE_HITS, "hybrid", RankingRules()) if query.strip() else []
        ranked = self.rank_files(query, focus=focus, hits=hits)[:max_files]
        pack = ContextPack(query=query, files=ranked, budget=token_budget)
        wanted: list[ContextPiece] = []
        if focus is not None:
            wanted.extend(self._focus_pieces(focus))
        by_file: dict[str, list[ChunkHit]] = defaultdict(list)
        for hit in hits:
            by_file[hit.path].append(hit)
        for path, _score in ranked:
            for hit in sorted(by_file.get(path, []), key=lambda item: -item.score):
                wanted.append(
                    ContextPiece(hit.path, hit.start_line, hit.end_line, hit.text, hit.symbol, "match")
                )
        for path, _score in ranked[:3]:
            outline = self.store.outline(path)
            if outline:
                lines = outline.count("\n") + 1
                wanted.append(ContextPiece(path, 1, lines, outline, None, "outline"))
        _pack(pack, wanted, token_budget)
        return pack

    def _focus_pieces(self, focus: Focus) -> list[ContextPiece]:
        chunks = self.store.chunks(focus.path)
        if focus.start_line is None:
            return [ContextPiece(c.path, c.start_line, c.end_line, c.text, c.symbol, "focus") for c in chunks]
        end = focus.end_line or focus.start_line
        return [
            ContextPiece(c.path, c.start_line, c.end_line, c.text, c.symbol, "focus")
            for c in chunks
            if c.start_line <= end and c.end_line >= focus.start_line
        ]


def _hit(item: ChunkHit) -> SearchHit:
    return SearchHit(
        path=item.path,
        start_line=item.start_line,
        end_line=item.end_line,
        symbol=item.symbol,
        kind=item.kind,
        score=round(float(item.score), 6),
        text=item.text,
        modes=tuple(sorted(item.modes)),
    )


def _pack(pack: ContextPack, wanted: list[ContextPiece], budget: int) -> None:
    """Greedy packing in priority order; a piece overlapping one already taken is skipped."""
    taken: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for piece in wanted:
        if piece.reason != "outline" and any(
            piece.start_line <= end and piece.end_line >= start for start, end in taken[piece.path]
        ):
            continue
        cost = estimate_tokens(piece.text) + 12  # the citation line and fences
        if pack.tokens + cost > budget:
            continue
        pack.pieces.append(piece)
        pack.tokens += cost
        if piece.reason != "outline":
            taken[piece.path].append((piece.start_line, piece.end_line))
