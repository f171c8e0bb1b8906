"""The plain records the index is made of, with `Symbol` and `Reference` from `code.symbols`.

Paths are workspace-relative POSIX strings. Lines are 1-based and inclusive.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from swarm_lsp.code.symbols import Reference, Symbol

SCHEMA_VERSION = 1
"""Bump when a data table's columns or their meaning change; the next open rebuilds."""


def text_hash(text: str) -> str:
    """Content address of a chunk's text: the embedding cache key (with the embedder id)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class FileRecord:
    path: str
    language: str  # "python", "javascript", ..., or "text" for the line/paragraph chunker
    size: int
    mtime_ns: int
    sha256: str
    outline: str
    """The file collapsed to signatures, docstrings and top comments, bodies elided."""


@dataclass(frozen=True)
class Chunk:
    path: str
    start_line: int
    end_line: int
    symbol: str | None  # qualified name of the symbol the chunk belongs to
    kind: str  # function, method, class (collapsed form), block (part of a split body), text, module
    language: str
    text: str

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)

    @property
    def chunk_id(self) -> str:
        """Stable identity of this chunk at this place in this file."""
        key = f"{self.path}\0{self.start_line}\0{self.end_line}\0{self.text_hash}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class ParsedFile:
    record: FileRecord
    symbols: list[Symbol] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
