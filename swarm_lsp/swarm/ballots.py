"""The ballots of one vote, how strongly they agree with each other, and the medoid vote.

Every strategy reads its ballots through a `BallotPool`, which computes the pairwise similarities
once; the medoid (the ballot most similar to all the others) is also what `judge` and `exec` fall
back to. Ties go to the higher consensus, then to the lowest ballot index, so the same ballots give
the same result in any order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from swarm_lsp.swarm.similarity import (
    MAX_SIMILARITY_TOKENS,
    Similarity,
    lcs_length,
    position_masks,
    tokenize,
)


@dataclass(frozen=True)
class Ballot:
    """One candidate as the voter sees it."""

    index: int
    text: str
    code: str | None = None
    """For code tasks: the extracted code (the replacement text), if any."""
    valid: bool = True
    """False when the task layer found the answer malformed (e.g. an edit that does not parse)."""
    invalid_reason: str = ""
    weight: float = 1.0
    """How much this candidate counts (`majority`, `grounded`): its model's quality when several
    models vote together; 1.0 otherwise."""


@dataclass(frozen=True)
class VoteResult:
    strategy: str
    """The strategy actually used: a `judge` vote that fell back says `medoid`, and a note says why."""
    winner: int | None
    """`Ballot.index` of the winner; None only when no ballot was valid."""
    agreement: float
    """In [0, 1]: how strongly the candidates agree with the winner."""
    scores: dict[int, float]
    """Per candidate (every ballot; invalid ones 0.0)."""
    notes: tuple[str, ...] = ()
    votes: dict[int, int] = field(default_factory=dict)
    """Per candidate, how many candidates' answers counted for it (majority, exec); else empty."""


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)```", re.S)


def code_of(ballot: Ballot) -> str:
    """The code of a ballot: its extracted code, else its first fenced block, else its whole text."""
    if ballot.code is not None:
        return ballot.code
    fenced = _FENCE.search(ballot.text)
    return fenced.group(1) if fenced else ballot.text


class BallotPool:
    """The ballots of one vote, with their pairwise similarities computed once, on demand."""

    def __init__(self, ballots: Sequence[Ballot], similarity: Similarity | None, *, use_code: bool) -> None:
        self.ballots = list(ballots)
        self.valid = [b for b in self.ballots if b.valid]
        self.use_code = use_code
        self.similarity = similarity
        self._matrix: dict[tuple[int, int], float] | None = None

    def content(self, ballot: Ballot) -> str:
        return code_of(ballot) if self.use_code else ballot.text

    def zero_scores(self) -> dict[int, float]:
        return {b.index: 0.0 for b in self.ballots}

    def invalid_notes(self) -> list[str]:
        invalid = [b for b in self.ballots if not b.valid]
        if not invalid:
            return []
        reasons = sorted({b.invalid_reason for b in invalid if b.invalid_reason})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return [f"{plural(len(invalid), 'candidate')} invalid{why}"]

    def pairwise(self) -> dict[tuple[int, int], float]:
        """Similarity of every pair of valid ballots, keyed by (lower index, higher index)."""
        if self._matrix is None:
            self._matrix = self._compute()
        return self._matrix

    def _compute(self) -> dict[tuple[int, int], float]:
        valid = self.valid
        matrix: dict[tuple[int, int], float] = {}
        if self.similarity is not None:
            for i, a in enumerate(valid):
                for b in valid[i + 1 :]:
                    value = float(self.similarity(self.content(a), self.content(b)))
                    matrix[a.index, b.index] = min(1.0, max(0.0, value))
            return matrix
        vocabulary: dict[str, int] = {}
        ids = [
            [vocabulary.setdefault(t, len(vocabulary)) for t in tokenize(self.content(b))][
                :MAX_SIMILARITY_TOKENS
            ]
            for b in valid
        ]
        masks = [position_masks(tokens) for tokens in ids]
        for i, a in enumerate(valid):
            for j in range(i + 1, len(valid)):
                longer, shorter = (i, j) if len(ids[i]) >= len(ids[j]) else (j, i)
                if ids[shorter]:  # same rule as `rouge_l`: empty agrees with nothing
                    total = len(ids[i]) + len(ids[j])
                    value = 2 * lcs_length(masks[longer], len(ids[longer]), ids[shorter]) / total
                else:
                    value = 0.0
                matrix[a.index, valid[j].index] = value
        return matrix

    def between(self, a: int, b: int) -> float:
        if a == b:
            return 1.0
        return self.pairwise()[min(a, b), max(a, b)]

    def consensus(self) -> dict[int, float]:
        """Per valid ballot, its mean similarity to the other valid ballots (1.0 when it is alone)."""
        if len(self.valid) == 1:
            return {self.valid[0].index: 1.0}
        others = len(self.valid) - 1
        return {
            a.index: sum(self.between(a.index, b.index) for b in self.valid if b is not a) / others
            for a in self.valid
        }

    def all_scores(self, valid_scores: dict[int, float]) -> dict[int, float]:
        return {b.index: valid_scores.get(b.index, 0.0) for b in self.ballots}


def medoid_vote(pool: BallotPool, notes: Sequence[str] = ()) -> VoteResult:
    """The `medoid` strategy: the valid ballot with the highest mean similarity to the others."""
    consensus = pool.consensus()
    winner = best_index(list(consensus), lambda i: (rounded(consensus[i]),))
    all_notes = [*pool.invalid_notes(), *notes]
    return VoteResult("medoid", winner, clip(consensus[winner]), pool.all_scores(consensus), tuple(all_notes))


def best_index(candidates: Sequence[int], key: Callable[[int], tuple]) -> int:
    """The candidate with the highest key; equal keys go to the lowest index."""
    return max(sorted(candidates), key=lambda i: (*key(i), -i))


def rounded(value: float) -> float:
    # Sums of the same similarities in another order may differ in the last bits: compare rounded.
    return round(value, 9)


def clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def plural(n: int, noun: str) -> str:
    """`plural(1, "candidate")` is "1 candidate", `plural(3, "candidate")` is "3 candidates"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
