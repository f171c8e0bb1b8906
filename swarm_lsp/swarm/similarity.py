"""How alike two answers are: ROUGE-L F1 over code-aware tokens.

The longest common subsequence is computed bit-parallel over token position masks, so a vote can
compare every pair of N long candidates in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

MAX_SIMILARITY_TOKENS = 4000
"""Texts are compared on their first this-many tokens: keeps the pairwise LCS bounded for huge answers."""

Similarity = Callable[[str, str], float]
"""A similarity of two texts in [0, 1], e.g. `rouge_l` or an embedding cosine."""

_TOKEN = re.compile(
    r"[A-Z]+(?=[A-Z][a-z])"  # the "HTTP" in HTTPServer
    r"|[A-Z]?[a-z]+"  # words and camelCase parts
    r"|[A-Z]+"
    r"|\d+"
    r"|[^\W\d_A-Za-z]+"  # other scripts' letters
    r"|[^\w\s]"  # each punctuation character
)


def tokenize(text: str) -> list[str]:
    """Code-aware, case-folded tokens: identifier parts (camelCase, snake_case), numbers, punctuation."""
    return [t.casefold() for t in _TOKEN.findall(text)]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts over `tokenize` tokens: 2·LCS / (len a + len b).

    An empty text agrees with nothing, not even another empty one: two voters that said nothing are
    no consensus.
    """
    ta, tb = tokenize(a)[:MAX_SIMILARITY_TOKENS], tokenize(b)[:MAX_SIMILARITY_TOKENS]
    if not ta or not tb:
        return 0.0
    if len(ta) < len(tb):
        ta, tb = tb, ta
    return 2 * lcs_length(position_masks(ta), len(ta), tb) / (len(ta) + len(tb))


def position_masks(tokens: Sequence[object]) -> dict[object, int]:
    """Per distinct token, a bit mask of the positions where it occurs: the input of `lcs_length`."""
    masks: dict[object, int] = {}
    for position, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << position)
    return masks


def lcs_length(masks: dict[object, int], length: int, other: Sequence[object]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): O(len(other)·length/64).

    `masks` are the `position_masks` of a sequence of `length` tokens.
    """
    row = (1 << length) - 1
    for token in other:
        match = masks.get(token)
        if match:
            match &= row
            # Carries only move upwards, so bits above `length` never disturb the ones we count.
            row = (row + match) | (row - match)
    return length - (row & ((1 << length) - 1)).bit_count()
