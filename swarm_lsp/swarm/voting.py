"""Pick one answer from the swarm's candidates, and say how strongly the candidates agree with it.

Strategies (`vote(..., strategy=...)`):

- `majority`: short answers (identifiers, paths, yes/no, numbers) are normalised (`short_answers`)
  and counted.
- `medoid`: the candidate most similar to all the others (ROUGE-L F1 over code-aware tokens, or a
  given similarity such as embedding cosine); for free text and code without tests (`ballots`).
- `judge`: universal self-consistency: a model reads all candidates and names the most consistent
  one. An unusable pick falls back to `medoid`, and the result says so (`judge`).
- `exec`: for Python code: candidates that do not compile are dropped; the rest run in one
  subprocess (time-limited, network blocked) and are ranked by tests passed, then by how many other
  candidates produce the same outputs (MBR-exec / CodeT) (`exec_vote`).
- `grounded`: the candidate whose claims (files, symbols) check out against the workspace's index,
  backed by the others (`grounded_vote`, with `verification`); needs the candidates' evidence.
- `auto`: chooses one of the above from the task kind and the answers.

Invalid ballots (the task layer found them malformed) never win. Ties are broken by consensus
similarity, then by the lowest candidate index, so the same ballots give the same result in any
order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from swarm_lsp.config import VOTING_STRATEGIES
from swarm_lsp.swarm.ballots import (
    Ballot,
    BallotPool,
    VoteResult,
    best_index,
    clip,
    medoid_vote,
    plural,
    rounded,
)
from swarm_lsp.swarm.exec_vote import ExecSpec, exec_vote
from swarm_lsp.swarm.grounded_vote import grounded_vote
from swarm_lsp.swarm.judge import Judge, judge_vote
from swarm_lsp.swarm.short_answers import normalize_answer
from swarm_lsp.swarm.similarity import Similarity
from swarm_lsp.swarm.tasks import CODE_KINDS
from swarm_lsp.swarm.verification import Evidence

SHORT_ANSWER_WORDS = 12
"""`auto` counts an `ask` answer up to this many words as short, and votes on such answers by majority."""
JUDGE_MIN_CANDIDATES = 3
"""`auto` asks the judge only from this many valid candidates: with two there is no majority to find."""
PROSE_KINDS = frozenset({"explain", "chat"})
GROUNDED_KINDS = frozenset({"ask", "chat"})
"""`auto` votes on these by `grounded` when some candidate makes a claim the workspace can check."""


def vote(
    ballots: Sequence[Ballot],
    strategy: str = "auto",
    *,
    task_kind: str = "ask",
    judge: Judge | None = None,
    exec_spec: ExecSpec | None = None,
    similarity: Similarity | None = None,
    question: str = "",
    evidence: Mapping[int, Evidence] | None = None,
) -> VoteResult:
    """Pick the winner among `ballots` by `strategy`; `question` is only shown to the judge;
    `evidence` (by ballot index) is what `grounded` weighs."""
    if strategy not in VOTING_STRATEGIES:
        raise ValueError(f"unknown voting strategy {strategy!r}; use one of {', '.join(VOTING_STRATEGIES)}")
    ordered = sorted(ballots, key=lambda b: b.index)
    if len({b.index for b in ordered}) != len(ordered):
        raise ValueError("ballot indices must be unique")
    if strategy == "auto":
        strategy = choose_strategy(ordered, task_kind, judge=judge, exec_spec=exec_spec, evidence=evidence)
    use_code = task_kind in CODE_KINDS or strategy == "exec"
    pool = BallotPool(ordered, similarity, use_code=use_code)
    if not pool.valid:
        return VoteResult(
            strategy,
            None,
            0.0,
            pool.zero_scores(),
            ("no valid candidate to vote on", *pool.invalid_notes()),
        )
    if strategy == "majority":
        return _majority(pool)
    if strategy == "medoid":
        return medoid_vote(pool)
    if strategy == "judge":
        return judge_vote(pool, judge, question)
    if strategy == "grounded":
        return grounded_vote(pool, evidence or {})
    return exec_vote(pool, exec_spec or ExecSpec())


def choose_strategy(
    ballots: Sequence[Ballot],
    task_kind: str,
    *,
    judge: Judge | None = None,
    exec_spec: ExecSpec | None = None,
    evidence: Mapping[int, Evidence] | None = None,
) -> str:
    """What `auto` means for this task kind and these ballots."""
    valid = [b for b in ballots if b.valid]
    checkable = evidence is not None and any(evidence[b.index].claims for b in valid if b.index in evidence)
    if task_kind in GROUNDED_KINDS and checkable:
        return "grounded"
    if task_kind == "ask":
        short = all(len(b.text.split()) <= SHORT_ANSWER_WORDS for b in valid)
        return "majority" if short else "medoid"
    if task_kind in PROSE_KINDS:
        return "judge" if judge is not None and len(valid) >= JUDGE_MIN_CANDIDATES else "medoid"
    if task_kind in CODE_KINDS and exec_spec is not None and exec_spec.language.lower() == "python":
        return "exec"
    return "medoid"


def _majority(pool: BallotPool) -> VoteResult:
    groups: dict[str, list[int]] = {}
    empty: list[int] = []
    for ballot in pool.valid:
        answer = normalize_answer(ballot.text)
        if answer:
            groups.setdefault(answer, []).append(ballot.index)
        else:
            empty.append(ballot.index)
    notes = pool.invalid_notes()
    if empty:
        notes.append(f"{plural(len(empty), 'empty answer')} did not count")
    if not groups:
        votes = {b.index: 0 for b in pool.ballots}
        return VoteResult("majority", empty[0], 0.0, pool.zero_scores(), tuple(notes), votes)
    weight = {b.index: b.weight for b in pool.valid}
    support = {answer: rounded(sum(weight[i] for i in members)) for answer, members in groups.items()}
    best = max(support.values())
    tied = [members for answer, members in groups.items() if support[answer] == best]
    size = len(tied[0])
    # Similarity decides between tied answers, and between the wordings within the winning answer.
    consensus = pool.consensus() if len(tied) > 1 or size > 1 else {}
    if len(tied) > 1:
        mean = {tuple(m): sum(consensus[i] for i in m) / len(m) for m in tied}
        group = max(tied, key=lambda m: (rounded(mean[tuple(m)]), -min(m)))
        notes.append(
            f"{len(tied)} answers tied with {plural(size, 'vote')}; "
            "broken by similarity to the other candidates, then by lowest index"
        )
    else:
        group = tied[0]
    winner = best_index(group, lambda i: (rounded(consensus.get(i, 0.0)),))
    votes = {b.index: 0 for b in pool.ballots}
    total = sum(weight.values())
    scores: dict[int, float] = {}
    for answer, members in groups.items():
        for i in members:
            votes[i] = len(members)
            scores[i] = support[answer] / total
    agreement = clip(best / total)
    return VoteResult("majority", winner, agreement, pool.all_scores(scores), tuple(notes), votes)
