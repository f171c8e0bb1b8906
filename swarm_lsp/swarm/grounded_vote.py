"""The `grounded` strategy: the candidate whose claims check out against the workspace, backed by others.

Each valid ballot comes with its `Evidence` (verification.py). Its score is

    weight x (evidence + BACKING_WEIGHT x backing + CONSENSUS_WEIGHT x consensus)

where `weight` is the ballot's (its model's quality when several models vote, else 1), `backing`
the share of the other valid candidates that make one of its checked-out claims
too (they point at the same file or symbol, however worded), and `consensus` its mean text similarity
to the others (the medoid's measure), which decides among candidates with equal evidence. A candidate
naming a file or symbol that does not exist loses ground; one whose file defines what was asked gains.

The agreement is the mean of the winner's evidence and the share of candidates backing it (itself
included): high when the winner's claims check out and most candidates say the same; a winner with
nothing checkable gets half its consensus.
"""

from __future__ import annotations

from collections.abc import Mapping

from swarm_lsp.swarm.ballots import BallotPool, VoteResult, best_index, clip, rounded
from swarm_lsp.swarm.verification import Evidence

BACKING_WEIGHT = 0.5
CONSENSUS_WEIGHT = 0.3


def grounded_vote(pool: BallotPool, evidence: Mapping[int, Evidence]) -> VoteResult:
    consensus = pool.consensus()
    valid = [b.index for b in pool.valid]
    neutral = Evidence(0.5)
    claims = {i: {claim.lower() for claim in evidence.get(i, neutral).supported} for i in valid}
    backing = {
        i: (
            sum(1 for j in valid if j != i and claims[i] & claims[j]) / (len(valid) - 1)
            if len(valid) > 1
            else 0.0
        )
        for i in valid
    }
    weight = {b.index: b.weight for b in pool.valid}
    scores = {
        i: weight[i]
        * (evidence.get(i, neutral).score + BACKING_WEIGHT * backing[i] + CONSENSUS_WEIGHT * consensus[i])
        for i in valid
    }
    winner = best_index(valid, lambda i: (rounded(scores[i]), rounded(consensus[i])))
    notes = pool.invalid_notes()
    won = evidence.get(winner, neutral)
    if claims[winner]:
        share = (1 + backing[winner] * (len(valid) - 1)) / len(valid)
        agreement = 0.5 * won.score + 0.5 * share
    else:
        agreement = 0.5 * consensus[winner]
        notes.append("no claim of the winner could be checked against the workspace")
    missing = sum(1 for i in valid if evidence.get(i, neutral).missing)
    if missing:
        notes.append(f"{missing} of {len(valid)} candidates named files or symbols the workspace lacks")
    return VoteResult("grounded", winner, clip(agreement), pool.all_scores(scores), tuple(notes))
