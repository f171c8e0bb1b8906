"""Definition-aligned chunks of a parsed code file, each under a budget of characters.

- a definition (function, class, struct, impl, ...) that fits the budget is one chunk of its kind,
  together with the comments and attributes directly above it;
- a larger container (class, impl, namespace, ...) becomes its collapsed form, the chunk kind ``"class"``
  (member bodies replaced by ``...`` lines), plus the chunks of each member, recursively;
- a larger function, or a large container without members, is split into ``"block"`` chunks at statement
  boundaries; blocks after the first start with the signature and a ``...`` line so they stay searchable,
  but their lines are the block's own;
- the code between top-level definitions (imports, constants, the module docstring) becomes ``"module"``
  chunks, split at top-level statement boundaries.

Every non-blank line of the file lies in some chunk.

Definitions written inside one another on the same lines (minified code, or 5,000 namespaces opened on
one line) would repeat those lines in the collapsed form of every level. The chunks of a file therefore
hold at most ``MAX_REPEAT`` times its text; a file past that is chunked by its top-level statements
instead, as the code between definitions is, so each line lies in exactly one chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from swarm_lsp.code.definitions import CONTAINER_KINDS, Definition, ParsedCode
from swarm_lsp.code.outline import Piece, collapse
from swarm_lsp.code.parsing import SourceText, Statement
from swarm_lsp.index.records import Chunk

__all__ = ["MAX_REPEAT", "chunk_code"]

MAX_REPEAT = 3
"""The chunks of a file hold at most this many times its characters (ordinary code: under 2.1 times,
measured over 2,800 files of Python, C, C++ and JavaScript; minified JavaScript up to 13 times)."""


def chunk_code(code: ParsedCode, budget: int) -> list[Chunk]:
    """The chunks of ``code`` under ``budget`` characters each, ordered by first line, longest first."""
    try:
        return _CodeChunker(code, budget).build_chunks()
    except _TooRepetitive:
        return _CodeChunker(code, budget, repeat=None).statement_chunks()


class _TooRepetitive(Exception):
    """The definition-aligned chunks would repeat the file's text more than MAX_REPEAT times."""


class _CodeChunker:
    def __init__(self, code: ParsedCode, budget: int, repeat: int | None = MAX_REPEAT) -> None:
        self.code = code
        self.path = code.path
        self.language = code.language
        self.source = code.source
        self.budget = budget  # characters
        self.chunks: list[Chunk] = []
        self._allowance = None if repeat is None else repeat * len(code.source.text) + budget
        """Characters the chunks may still hold; None: no limit."""

    def statement_chunks(self) -> list[Chunk]:
        """The whole file as ``"module"`` chunks at top-level statement boundaries."""
        self._chunk_module(0, self.source.row_count - 1)
        return self.chunks

    def build_chunks(self) -> list[Chunk]:
        top_level = [d for d in self.code.definitions if d.parent is None and d.chunkable]
        covered_until = -1  # rows up to here already belong to a definition chunk
        gap_start = 0
        for definition in top_level:
            if definition.chunk_start_row <= covered_until:
                # shares rows with the previous definition (two on one line): chunk it on its own anyway
                self._chunk_definition(definition)
                covered_until = max(covered_until, definition.end_row)
                gap_start = covered_until + 1
                continue
            self._chunk_module(gap_start, definition.chunk_start_row - 1)
            self._chunk_definition(definition)
            covered_until = definition.end_row
            gap_start = covered_until + 1
        self._chunk_module(gap_start, self.source.row_count - 1)
        self.chunks.sort(key=lambda c: (c.start_line, -c.end_line))
        return self.chunks

    def _chunk_definition(self, outermost: Definition) -> None:
        # A stack, not recursion: containers nest as deep as the file does (5,000 nested namespaces
        # would pass Python's recursion limit). Members are taken in source order, as recursion would.
        pending = [outermost]
        while pending:
            definition = pending.pop()
            first, last = definition.chunk_start_row, definition.end_row
            if self.source.size(first, last) <= self.budget:
                self._emit(first, last, definition.qualified_name, definition.kind)
                continue
            members = [child for child in definition.children if child.chunkable]
            if definition.kind in CONTAINER_KINDS and members:
                self._chunk_collapsed(definition, members)
                pending.extend(reversed(members))
                continue
            self._chunk_blocks(definition)

    def _chunk_collapsed(self, definition: Definition, members: list[Definition]) -> None:
        hidden = [member.elided_rows for member in members if member.elided_rows is not None]
        pieces = collapse(self.source, definition.chunk_start_row, definition.end_row, hidden)
        header = f"{self.source.indent(definition.start_row)}{definition.signature}"
        if len(header) * 3 > self.budget:
            header = ""
        windows = _pack_pieces(pieces, self.budget - len(header) - 1)
        for index, window in enumerate(windows):
            size = sum(len(piece[2]) + 1 for piece in window)
            if index and header and size + len(header) <= self.budget:
                # later windows start with the class's signature, like blocks
                window = [(window[0][0], window[0][0], header), *window]
            self._emit_text(window[0][0], window[-1][1], definition.qualified_name, "class", window)

    def _chunk_blocks(self, definition: Definition) -> None:
        source = self.source
        signature = definition.signature
        indent = source.indent(definition.start_row)
        prefix = f"{indent}{signature}\n{indent}    ...\n" if signature else ""
        if len(prefix) * 3 > self.budget:
            prefix = ""
        first, last = definition.chunk_start_row, definition.end_row
        spans = _split_rows(
            source, first, last, [definition.statement], self.budget - len(prefix), self.budget
        )
        for start, end in spans:
            block_prefix = prefix if start > definition.header_row else ""
            self._emit(start, end, definition.qualified_name, "block", block_prefix)

    def _chunk_module(self, first: int, last: int) -> None:
        source = self.source
        while first <= last and source.blank(first):
            first += 1
        if first > last:
            return
        if source.size(first, last) <= self.budget:
            self._emit(first, last, None, "module")
            return
        statements = self.code.top_level_statements(first, last)
        for start, end in _split_rows(source, first, last, statements, self.budget):
            self._emit(start, end, None, "module")

    def _emit(self, first: int, last: int, symbol: str | None, kind: str, prefix: str = "") -> None:
        source = self.source
        while first < last and source.blank(first):
            first += 1
        while last > first and source.blank(last):
            last -= 1
        if first == last and source.blank(first):
            return
        text = source.rows(first, last)
        if first == last and len(text) > self.budget:
            # one huge line (minified code): pieces of it, all on that line
            step = max(self.budget, 1)
            for offset in range(0, len(text), step):
                self._add(first, last, symbol, kind, text[offset : offset + step])
            return
        if len(prefix) + len(text) > self.budget:
            prefix = ""  # a leaf that alone fills the budget goes without the signature
        self._add(first, last, symbol, kind, prefix + text)

    def _emit_text(
        self, first: int, last: int, symbol: str | None, kind: str, pieces: Sequence[Piece]
    ) -> None:
        text = "\n".join(piece[2] for piece in pieces).strip("\n")
        if text.strip():
            self._add(first, last, symbol, kind, text)

    def _add(self, first: int, last: int, symbol: str | None, kind: str, text: str) -> None:
        if self._allowance is not None:
            self._allowance -= len(text)
            if self._allowance < 0:
                raise _TooRepetitive
        self.chunks.append(Chunk(self.path, first + 1, last + 1, symbol, kind, self.language, text))


def _pack_pieces(pieces: list[Piece], budget: int) -> list[list[Piece]]:
    windows: list[list[Piece]] = []
    current: list[Piece] = []
    size = -1
    for piece in pieces:
        piece_size = len(piece[2]) + 1
        if current and size + piece_size > budget:
            windows.append(current)
            current, size = [], -1
        current.append(piece)
        size += piece_size
    if current:
        windows.append(current)
    return windows


def _units(statements: Sequence[Statement], first: int, last: int) -> list[list]:
    """Row spans [start, end, statements] clipped to ``first..last``, covering every row there.

    Statements sharing a row merge into one span; the rows between spans join the span after them (the
    comments and blank lines before a statement belong with it), the rows after the last span join that span.
    """
    spans: list[list] = []
    for statement in statements:
        start = max(statement.first_row, first)
        end = min(statement.last_row, last)
        if end < start:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
            spans[-1][2].append(statement)
        else:
            spans.append([start, end, [statement]])
    if not spans:
        return [[first, last, []]]
    spans[0][0] = first
    for previous, span in itertools.pairwise(spans):
        span[0] = previous[1] + 1
    spans[-1][1] = last
    return spans


def _split_rows(
    source: SourceText,
    first: int,
    last: int,
    statements: Sequence[Statement],
    budget: int,
    first_budget: int | None = None,
) -> list[tuple[int, int]]:
    """Rows ``first..last`` cut into contiguous spans under ``budget`` characters, at statement boundaries.

    A span over budget is replaced by the spans of its statements' parts, as deep as needed; a leaf still
    over budget is cut into line windows. The span starting at ``first`` may use ``first_budget`` instead
    (the first block of a function carries no signature prefix).
    """
    budget = max(budget, 1)
    first_budget = max(first_budget or budget, budget)

    def limit(start: int) -> int:
        return first_budget if start == first else budget

    flat: list[tuple[int, int]] = []
    pending = list(reversed(_units(statements, first, last)))
    while pending:
        start, end, span_statements = pending.pop()
        if source.size(start, end) <= limit(start) or start == end:
            flat.append((start, end))
            continue
        parts = [part for statement in span_statements for part in statement.parts()]
        if not parts:
            flat.extend(source.windows(start, end, limit(start)))
            continue
        pending.extend(reversed(_units(parts, start, end)))

    spans: list[tuple[int, int]] = []
    current: list[int] | None = None
    for start, end in flat:
        if current is not None and source.size(current[0], end) <= limit(current[0]):
            current[1] = end
            continue
        if current is not None:
            spans.append((current[0], current[1]))
        current = [start, end]
    if current is not None:
        spans.append((current[0], current[1]))
    return spans
