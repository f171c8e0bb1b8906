"""The context a task is answered from: cited pieces of the workspace packed under a token budget.

The swarm consumes a `ContextPack`; where it comes from is the core's business (retrieval over the
index). `ContextSource` is the one call the swarm makes for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

PIECE_SEPARATOR = "\n\n--- "
"""Between two pieces of a rendered context (`ContextPack.render`)."""


@dataclass(frozen=True)
class Focus:
    """Where the user is: a file and optionally a line range (1-based, inclusive)."""

    path: str
    start_line: int | None = None
    end_line: int | None = None


@dataclass(frozen=True)
class ContextPiece:
    path: str
    start_line: int
    end_line: int
    text: str
    symbol: str | None
    reason: str  # "focus" | "match" | "outline"

    @property
    def citation(self) -> str:
        if self.reason == "outline":  # a collapsed view of the whole file, not a line range of it
            return f"{self.path} (outline)"
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass
class ContextPack:
    query: str
    pieces: list[ContextPiece] = field(default_factory=list)
    files: list[tuple[str, float]] = field(default_factory=list)
    """Files in rank order with their scores."""
    tokens: int = 0
    budget: int = 0

    def render(self) -> str:
        """The pack as prompt text: each piece under its citation, in a fenced block."""
        parts = []
        for piece in self.pieces:
            label = f" ({piece.symbol})" if piece.symbol else ""
            parts.append(f"--- {piece.citation}{label}\n```\n{piece.text}\n```")
        return "\n\n".join(parts)

    @property
    def citations(self) -> list[str]:
        return [piece.citation for piece in self.pieces]


class ContextSource(Protocol):
    """What builds a task's context: the core's retriever satisfies it."""

    def context_for(self, query: str, token_budget: int, focus: Focus | None = None) -> ContextPack: ...
