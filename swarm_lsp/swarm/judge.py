"""The `judge` strategy: universal self-consistency.

A model reads all valid candidates as "Response 1..N" and names the most consistent one; its pick
is parsed robustly ("Response 3", "the third", "#3"...). A missing or failing judge, or an unusable
pick, falls back to the medoid, and the result says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from swarm_lsp.swarm.ballots import Ballot, BallotPool, VoteResult, clip, medoid_vote

JUDGE_MAX_CHARS = 2000
"""Each response shown to the judge is cut to this many characters, so N of them fit a small model."""


class Judge(Protocol):
    """A model asked to name the most consistent response; the engine wraps a backend as one."""

    def __call__(self, prompt: str) -> str: ...


def build_judge_prompt(question: str, ballots: Sequence[Ballot], *, max_chars: int = JUDGE_MAX_CHARS) -> str:
    """The universal self-consistency prompt: the ballots as "Response 1..N", in the order given."""
    parts = []
    if question.strip():
        parts.append(f"Question:\n{question.strip()}\n")
    parts.append("I have generated the following responses to the question:\n")
    for position, ballot in enumerate(ballots, start=1):
        text = ballot.text.strip()
        if len(text) > max_chars:
            text = text[:max_chars].rstrip() + "\n[... cut ...]"
        parts.append(f"Response {position}:\n{text}\n")
    parts.append(
        "Evaluate these responses. Select the most consistent response based on majority consensus.\n"
        f'Answer with one line: "The most consistent response is Response K", '
        f"where K is a number from 1 to {len(ballots)}."
    )
    return "\n".join(parts)


_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "first": 1, "second": 2, "third": 3,
    "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
}  # fmt: skip
_PICK = r"(\d+|" + "|".join(_NUMBER_WORDS) + r")\b"
_CANONICAL = re.compile(
    r"most\s+consistent\s+(?:response|answer|one)\s+is\s*:?\s*(?:response\s*)?#?\s*" + _PICK
)
_ANSWER_PICK = re.compile(
    r"\b(?:answer|pick|choice|verdict)\s*(?:is)?\s*[:=\-]?\s*(?:response\s*)?#?\s*" + _PICK
)
_PRAISED = re.compile(r"response\s*#?\s*" + _PICK + r"\s+is\s+(?:the\s+)?(?:most|best)")
_MENTION = re.compile(r"response\s*#?\s*" + _PICK)
_BARE = re.compile(r"^\s*(?:response\s*)?#?\s*" + _PICK + r"\s*[.)!]?\s*$")


def parse_judge_pick(text: str, n: int) -> int | None:
    """The 0-based position the judge picked among `n` responses, or None when unclear or out of range.

    Reads "The most consistent response is Response 3", "response #3", "3", "**3**", "Answer: Response 2.";
    several different responses mentioned with no clear pick is unclear.
    """
    plain = re.sub(r"[*_`]", "", text).casefold().strip()
    if not plain:
        return None
    first_line = plain.splitlines()[0]
    picks: list[str] = []
    for pattern in (_CANONICAL, _ANSWER_PICK, _PRAISED):
        match = pattern.search(plain)
        if match:
            picks = [match.group(1)]
            break
    else:
        bare = _BARE.match(first_line) or _BARE.match(plain)
        if bare:
            picks = [bare.group(1)]
        else:
            mentioned = {_pick_number(m) for m in _MENTION.findall(plain)}
            if len(mentioned) == 1:
                picks = [str(mentioned.pop())]
    if not picks:
        return None
    number = _pick_number(picks[0])
    return number - 1 if 1 <= number <= n else None


def _pick_number(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS[token]


def judge_vote(pool: BallotPool, judge: Judge | None, question: str) -> VoteResult:
    """The `judge` strategy over `pool`; `question` is shown to the judge above the responses."""
    if judge is None:
        return medoid_vote(pool, ["no judge model available; fell back to medoid"])
    if len(pool.valid) < 2:
        return medoid_vote(pool, ["one valid candidate; the judge was not asked"])
    prompt = build_judge_prompt(question, pool.valid)
    try:
        reply = judge(prompt)
    except Exception as error:  # a failing judge must not lose the vote: the medoid still stands
        return medoid_vote(pool, [f"judge failed ({type(error).__name__}: {error}); fell back to medoid"])
    position = parse_judge_pick(reply, len(pool.valid))
    if position is None:
        shown = " ".join(reply.split())[:80]
        return medoid_vote(pool, [f"judge output unparseable ({shown!r}); fell back to medoid"])
    winner = pool.valid[position].index
    consensus = pool.consensus()
    return VoteResult(
        "judge",
        winner,
        clip(consensus[winner]),
        pool.all_scores(consensus),
        tuple(pool.invalid_notes()),
    )
