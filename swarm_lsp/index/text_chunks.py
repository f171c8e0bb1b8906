"""Chunks of a text file, each under a budget of characters: Markdown by sections, other text by paragraphs.

Every non-blank line of the file lies in some chunk, of kind ``"text"``.
"""

from __future__ import annotations

from swarm_lsp.code.parsing import SourceText
from swarm_lsp.code.sections import Section
from swarm_lsp.index.records import Chunk

__all__ = ["chunk_text"]


def chunk_text(
    path: str, language: str, source: SourceText, sections: list[Section], budget: int
) -> list[Chunk]:
    """The chunks of a text file; ``sections`` are its Markdown sections (none for other text)."""
    return _TextChunker(path, language, source, budget).build_chunks(sections)


class _TextChunker:
    def __init__(self, path: str, language: str, source: SourceText, budget: int) -> None:
        self.path = path
        self.language = language
        self.source = source
        self.budget = budget
        self.chunks: list[Chunk] = []

    def build_chunks(self, sections: list[Section]) -> list[Chunk]:
        top = [section for section in sections if section.parent is None]
        preamble_end = top[0].start - 1 if top else self.source.row_count - 1
        self._paragraphs(0, preamble_end, None)
        for section in top:
            self._chunk_section(section, section.start)
        return self.chunks

    def _chunk_section(self, section: Section, first: int) -> None:
        """The section from row ``first`` (its heading, or a bare parent heading above it)."""
        if self.source.size(first, section.end) <= self.budget:
            self._emit(first, section.end, section.qualified_name)
            return
        if not section.children:
            self._paragraphs(first, section.end, section.qualified_name)
            return
        intro_end = section.children[0].start - 1
        if all(self.source.blank(row) for row in range(section.start + 1, intro_end + 1)):
            # a heading with nothing under it but subsections goes with the first of them
            self._chunk_section(section.children[0], first)
        else:
            self._paragraphs(first, intro_end, section.qualified_name)
            self._chunk_section(section.children[0], section.children[0].start)
        for child in section.children[1:]:
            self._chunk_section(child, child.start)

    def _paragraphs(self, first: int, last: int, symbol: str | None) -> None:
        source = self.source
        if first > last:
            return
        if source.size(first, last) <= self.budget:
            self._emit(first, last, symbol)
            return
        # paragraphs: runs of non-blank rows, each with the blank rows before it
        units: list[tuple[int, int]] = []
        start = first
        for row in range(first, last + 1):
            if row > first and source.blank(row - 1) and not source.blank(row) and row > start:
                units.append((start, row - 1))
                start = row
        units.append((start, last))
        current: list[int] | None = None
        for unit_start, unit_end in units:
            if current is not None and source.size(current[0], unit_end) <= self.budget:
                current[1] = unit_end
                continue
            if current is not None:
                self._emit(current[0], current[1], symbol)
                current = None
            if source.size(unit_start, unit_end) > self.budget:
                for window in source.windows(unit_start, unit_end, self.budget):
                    self._emit(*window, symbol)
            else:
                current = [unit_start, unit_end]
        if current is not None:
            self._emit(current[0], current[1], symbol)

    def _emit(self, first: int, last: int, symbol: str | None) -> None:
        source = self.source
        while first < last and source.blank(first):
            first += 1
        while last > first and source.blank(last):
            last -= 1
        if source.blank(first):
            return
        text = source.rows(first, last)
        step = max(self.budget, 1)
        for offset in range(0, len(text), step):
            piece = text[offset : offset + step]
            self.chunks.append(Chunk(self.path, first + 1, last + 1, symbol, "text", self.language, piece))
