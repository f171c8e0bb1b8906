"""A cheap token estimate for budgets that must be checked before any model tokenizer is loaded."""

from __future__ import annotations

CHARS_PER_TOKEN = 4
"""The token estimate's ratio: about what BPE tokenizers give on English and code (3-4 characters)."""


def estimate_tokens(text: str) -> int:
    """A cheap token count: ``ceil(len(text) / CHARS_PER_TOKEN)``.

    Additive over lines (up to rounding), so chunk budgets can be checked with prefix sums of line lengths.
    """
    return -(-len(text) // CHARS_PER_TOKEN)
