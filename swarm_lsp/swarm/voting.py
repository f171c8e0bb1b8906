"""Pick one answer from the swarm's candidates, and say how strongly the candidates agree with it.

Strategies (`vote(..., strategy=...)`):

- `majority`: short answers (identifiers, paths, yes/no, numbers) are normalised and counted.
- `medoid`: the candidate most similar to all the others (ROUGE-L F1 over code-aware tokens, or a
  given similarity such as embedding cosine); for free text and code without tests.
- `judge`: universal self-consistency: a model reads all candidates and names the most consistent
  one. An unusable pick falls back to `medoid`, and the result says so.
- `exec`: for Python code: candidates that do not compile are dropped; the rest run in one
  subprocess (time-limited, network blocked) and are ranked by tests passed, then by how many other
  candidates produce the same outputs (MBR-exec / CodeT).
- `auto`: chooses one of the above from the task kind and the answers.

Invalid ballots (the task layer found them malformed) never win. Ties are broken by consensus
similarity, then by the lowest candidate index, so the same ballots give the same result in any
order.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Protocol

STRATEGIES = ("auto", "majority", "medoid", "judge", "exec")
SHORT_ANSWER_WORDS = 12
"""`auto` counts an `ask` answer up to this many words as short, and votes on such answers by majority."""
JUDGE_MIN_CANDIDATES = 3
"""`auto` asks the judge only from this many valid candidates: with two there is no majority to find."""
JUDGE_MAX_CHARS = 2000
"""Each response shown to the judge is cut to this many characters, so N of them fit a small model."""
MAX_SIMILARITY_TOKENS = 4000
"""Texts are compared on their first this-many tokens: keeps the pairwise LCS bounded for huge answers."""
CODE_KINDS = frozenset({"refactor", "fix", "document"})
"""Their answers are code (a documented selection is code too): compared as code, never judged as prose."""
PROSE_KINDS = frozenset({"explain", "chat"})


class Judge(Protocol):
    """A model asked to name the most consistent response; the engine wraps a backend as one."""

    def __call__(self, prompt: str) -> str: ...


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


@dataclass(frozen=True)
class ExecSpec:
    """How to check code candidates by running them."""

    language: str = "python"
    tests: Sequence[str] = ()
    """Test sources: assert statements, or pytest-style `test_*` functions (called without arguments)."""
    inputs: Sequence[str] = ()
    """Expressions evaluated in each candidate's namespace, e.g. "f(3)"; equal outputs mean agreement."""
    timeout_s: float = 5.0
    """Per candidate: its module, tests and inputs together."""
    total_timeout_s: float | None = None
    """For the whole exec vote; None means `timeout_s` per candidate plus start-up."""


Similarity = Callable[[str, str], float]


def vote(
    ballots: Sequence[Ballot],
    strategy: str = "auto",
    *,
    task_kind: str = "ask",
    judge: Judge | None = None,
    exec_spec: ExecSpec | None = None,
    similarity: Similarity | None = None,
    question: str = "",
) -> VoteResult:
    """Pick the winner among `ballots` by `strategy`; `question` is only shown to the judge."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown voting strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    ordered = sorted(ballots, key=lambda b: b.index)
    if len({b.index for b in ordered}) != len(ordered):
        raise ValueError("ballot indices must be unique")
    if strategy == "auto":
        strategy = choose_strategy(ordered, task_kind, judge=judge, exec_spec=exec_spec)
    use_code = task_kind in CODE_KINDS or strategy == "exec"
    pool = _Pool(ordered, similarity, use_code=use_code)
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
        return _medoid(pool)
    if strategy == "judge":
        return _judge(pool, judge, question)
    return _exec(pool, exec_spec or ExecSpec())


def choose_strategy(
    ballots: Sequence[Ballot],
    task_kind: str,
    *,
    judge: Judge | None = None,
    exec_spec: ExecSpec | None = None,
) -> str:
    """What `auto` means for this task kind and these ballots."""
    valid = [b for b in ballots if b.valid]
    if task_kind == "ask":
        short = all(len(b.text.split()) <= SHORT_ANSWER_WORDS for b in valid)
        return "majority" if short else "medoid"
    if task_kind in PROSE_KINDS:
        return "judge" if judge is not None and len(valid) >= JUDGE_MIN_CANDIDATES else "medoid"
    if task_kind in CODE_KINDS and exec_spec is not None and exec_spec.language.lower() == "python":
        return "exec"
    return "medoid"


# --------------------------------------------------------------------------------------- similarity

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
    return 2 * _lcs(_position_masks(ta), len(ta), tb) / (len(ta) + len(tb))


def _position_masks(tokens: Sequence[object]) -> dict[object, int]:
    masks: dict[object, int] = {}
    for position, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << position)
    return masks


def _lcs(masks: dict[object, int], length: int, other: Sequence[object]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): O(len(other)·length/64)."""
    row = (1 << length) - 1
    for token in other:
        match = masks.get(token)
        if match:
            match &= row
            # Carries only move upwards, so bits above `length` never disturb the ones we count.
            row = (row + match) | (row - match)
    return length - (row & ((1 << length) - 1)).bit_count()


class _Pool:
    """The ballots of one vote, with their pairwise similarities computed once, on demand."""

    def __init__(self, ballots: Sequence[Ballot], similarity: Similarity | None, *, use_code: bool) -> None:
        self.ballots = list(ballots)
        self.valid = [b for b in self.ballots if b.valid]
        self.use_code = use_code
        self.similarity = similarity
        self._matrix: dict[tuple[int, int], float] | None = None

    def content(self, ballot: Ballot) -> str:
        return _code_of(ballot) if self.use_code else ballot.text

    def zero_scores(self) -> dict[int, float]:
        return {b.index: 0.0 for b in self.ballots}

    def invalid_notes(self) -> list[str]:
        invalid = [b for b in self.ballots if not b.valid]
        if not invalid:
            return []
        reasons = sorted({b.invalid_reason for b in invalid if b.invalid_reason})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return [f"{_count(len(invalid), 'candidate')} invalid{why}"]

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
        masks = [_position_masks(tokens) for tokens in ids]
        for i, a in enumerate(valid):
            for j in range(i + 1, len(valid)):
                longer, shorter = (i, j) if len(ids[i]) >= len(ids[j]) else (j, i)
                if ids[shorter]:  # same rule as `rouge_l`: empty agrees with nothing
                    total = len(ids[i]) + len(ids[j])
                    value = 2 * _lcs(masks[longer], len(ids[longer]), ids[shorter]) / total
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


def _best(candidates: Sequence[int], key: Callable[[int], tuple]) -> int:
    """The candidate with the highest key; equal keys go to the lowest index."""
    return max(sorted(candidates), key=lambda i: (*key(i), -i))


def _rounded(value: float) -> float:
    # Sums of the same similarities in another order may differ in the last bits: compare rounded.
    return round(value, 9)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# ----------------------------------------------------------------------------------------- majority

_ANSWER_LINE = re.compile(r"^(?:[-*>#\s]*)(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:\-–—]?\s+(.+)$", re.I)
_YES = frozenset({"yes", "true", "correct", "yep", "yeah", "affirmative"})
_NO = frozenset({"no", "false", "incorrect", "nope", "negative"})
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:e[-+]?\d+)?$", re.I)
_QUOTES = "\"'“”‘’«»"
_TRAILING = ".,;:!?"


def final_answer(text: str) -> str:
    """The part of an answer that states the answer: an "Answer: ..." line, else the first line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        match = _ANSWER_LINE.match(line.replace("*", "").replace("`", "").strip())
        if match:
            return match.group(1)
    return lines[0]


def normalize_answer(text: str) -> str:
    """A short answer in canonical form, so that equal answers written differently compare equal.

    `**Yes.**` -> "yes", "1,000" -> "1000", "2.0" -> "2", "./a\\b.py" -> "a/b.py", "`foo()`" -> "foo".
    """
    answer = final_answer(text)
    answer = answer.replace("```", "").replace("`", "").replace("**", "").replace("__", "")
    answer = re.sub(r"^(?:[-*+>]|#+)\s+", "", answer.strip())
    previous = None
    while previous != answer:
        previous = answer
        answer = answer.strip().strip(_QUOTES).rstrip(_TRAILING).strip()
        if len(answer) >= 2 and answer[0] == "*" and answer[-1] == "*":
            answer = answer[1:-1]
    answer = " ".join(answer.split()).casefold()
    # "Yes, it does" is a yes; "no such function" is not a no.
    first = re.match(r"^([a-z]+)(?:$|\s*[,.;:!—–-])", answer)
    if first and first.group(1) in _YES | _NO:
        return "yes" if first.group(1) in _YES else "no"
    number = _normalize_number(answer)
    if number is not None:
        return number
    if " " not in answer and ("/" in answer or "\\" in answer):
        answer = re.sub(r"/{2,}", "/", answer.replace("\\", "/"))
        while answer.startswith("./"):
            answer = answer[2:]
        if len(answer) > 1:
            answer = answer.rstrip("/")
    if re.fullmatch(r"[\w.:]+\(\)", answer):
        answer = answer[:-2]
    return answer


def _normalize_number(text: str) -> str | None:
    if not text or not _NUMBER.match(text) or not re.search(r"\d", text):
        return None
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _majority(pool: _Pool) -> VoteResult:
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
        notes.append(f"{_count(len(empty), 'empty answer')} did not count")
    if not groups:
        votes = {b.index: 0 for b in pool.ballots}
        return VoteResult("majority", empty[0], 0.0, pool.zero_scores(), tuple(notes), votes)
    size = max(len(members) for members in groups.values())
    tied = [members for members in groups.values() if len(members) == size]
    # Similarity decides between tied answers, and between the wordings within the winning answer.
    consensus = pool.consensus() if len(tied) > 1 or size > 1 else {}
    if len(tied) > 1:
        mean = {tuple(m): sum(consensus[i] for i in m) / len(m) for m in tied}
        group = max(tied, key=lambda m: (_rounded(mean[tuple(m)]), -min(m)))
        notes.append(
            f"{len(tied)} answers tied with {_count(size, 'vote')}; "
            "broken by similarity to the other candidates, then by lowest index"
        )
    else:
        group = tied[0]
    winner = _best(group, lambda i: (_rounded(consensus.get(i, 0.0)),))
    votes = {b.index: 0 for b in pool.ballots}
    valid_n = len(pool.valid)
    scores: dict[int, float] = {}
    for members in groups.values():
        for i in members:
            votes[i] = len(members)
            scores[i] = len(members) / valid_n
    return VoteResult("majority", winner, _clip(size / valid_n), pool.all_scores(scores), tuple(notes), votes)


# ------------------------------------------------------------------------------------------- medoid


def _medoid(pool: _Pool, notes: Sequence[str] = ()) -> VoteResult:
    consensus = pool.consensus()
    winner = _best(list(consensus), lambda i: (_rounded(consensus[i]),))
    all_notes = [*pool.invalid_notes(), *notes]
    return VoteResult(
        "medoid", winner, _clip(consensus[winner]), pool.all_scores(consensus), tuple(all_notes)
    )


# -------------------------------------------------------------------------------------------- judge


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


def _judge(pool: _Pool, judge: Judge | None, question: str) -> VoteResult:
    if judge is None:
        return _medoid(pool, ["no judge model available; fell back to medoid"])
    if len(pool.valid) < 2:
        return _medoid(pool, ["one valid candidate; the judge was not asked"])
    prompt = build_judge_prompt(question, pool.valid)
    try:
        reply = judge(prompt)
    except Exception as error:  # a failing judge must not lose the vote: the medoid still stands
        return _medoid(pool, [f"judge failed ({type(error).__name__}: {error}); fell back to medoid"])
    position = parse_judge_pick(reply, len(pool.valid))
    if position is None:
        shown = " ".join(reply.split())[:80]
        return _medoid(pool, [f"judge output unparseable ({shown!r}); fell back to medoid"])
    winner = pool.valid[position].index
    consensus = pool.consensus()
    return VoteResult(
        "judge",
        winner,
        _clip(consensus[winner]),
        pool.all_scores(consensus),
        tuple(pool.invalid_notes()),
    )


# --------------------------------------------------------------------------------------------- exec

_STARTUP_S = 5.0
"""How long the harness may take to start and read its input before the watchdog gives up on it."""
_GRACE_S = 1.0
"""Beyond a candidate's own time limit, before the watchdog kills a candidate that ignored its alarm."""
_EXITED = "the interpreter exited"
_MEMORY_LIMIT = 2 << 30
_FILE_SIZE_LIMIT = 64 << 20

# Runs in `python -s -S -c`; reads the job as JSON on stdin and writes one JSON line per event on a
# private copy of stdout (the candidates' own output goes to /dev/null).
_HARNESS = r"""
import builtins, hashlib, json, os, re, signal, sys

class _Timeout(BaseException):
    pass

def _on_alarm(signum, frame):
    raise _Timeout()

def _limit(job):
    try:
        import resource
        limits = (("RLIMIT_AS", job["memory"]), ("RLIMIT_FSIZE", job["file_size"]), ("RLIMIT_CORE", 0))
        for name, value in limits:
            limit = getattr(resource, name, None)
            if limit is not None:
                try:
                    resource.setrlimit(limit, (value, value))
                except (ValueError, OSError):
                    pass
    except ImportError:
        pass

def _block_network():
    import socket, _socket
    message = "network access is disabled for candidate code"
    def refuse(*args, **kwargs):
        raise OSError(message)
    class BlockedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError(message)
    class BlockedRawSocket(_socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError(message)
    socket.socket = socket.SocketType = BlockedSocket
    _socket.socket = _socket.SocketType = BlockedRawSocket
    names = ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
             "gethostbyaddr", "getnameinfo", "socketpair", "fromfd")
    for module in (socket, _socket):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, refuse)

def _output(value):
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:20]

def _run(candidate, job):
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    result = {"event": "done", "index": candidate["index"], "error": None, "timed_out": False,
              "tests": [], "outputs": []}
    try:
        try:
            exec(compile(candidate["code"], "<candidate>", "exec"), namespace)
        except _Timeout:
            raise
        except BaseException as error:
            result["error"] = type(error).__name__ + ": " + str(error)[:200]
        for test in job["tests"]:
            scope = dict(namespace)
            try:
                exec(compile(test["source"], "<test>", "exec"), scope)
            except _Timeout:
                raise
            except BaseException:
                result["tests"].extend([False] * max(1, len(test["functions"])))
                continue
            if not test["functions"]:
                result["tests"].append(True)
            for name in test["functions"]:
                try:
                    scope[name]()
                    result["tests"].append(True)
                except _Timeout:
                    raise
                except BaseException:
                    result["tests"].append(False)
        for expression in job["inputs"]:
            try:
                result["outputs"].append(_output(eval(expression, dict(namespace))))
            except _Timeout:
                raise
            except BaseException:
                result["outputs"].append(None)
    except _Timeout:
        result["timed_out"] = True
    return result

def _main():
    job = json.loads(sys.stdin.read())
    channel = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    _limit(job)
    _block_network()
    alarm = hasattr(signal, "setitimer")
    if alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    for candidate in job["candidates"]:
        channel.write(json.dumps({"event": "start", "index": candidate["index"]}) + "\n")
        channel.flush()
        try:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, job["timeout"])
            result = _run(candidate, job)
        except _Timeout:
            result = {"event": "done", "index": candidate["index"], "error": None, "timed_out": True,
                      "tests": [], "outputs": []}
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        channel.write(json.dumps(result) + "\n")
        channel.flush()

_main()
"""


@dataclass
class _Outcome:
    """What running one candidate showed."""

    tests: list[bool]
    outputs: list[str | None]
    error: str | None = None
    timed_out: bool = False

    @property
    def clean(self) -> bool:
        return self.error is None and not self.timed_out


@dataclass(frozen=True)
class _Test:
    source: str
    functions: tuple[str, ...]

    @property
    def count(self) -> int:
        return max(1, len(self.functions))


def _exec(pool: _Pool, spec: ExecSpec) -> VoteResult:
    if spec.language.lower() != "python":
        return _medoid(
            pool, [f"exec runs Python only, not {spec.language}; fell back to medoid among valid candidates"]
        )
    notes: list[str] = pool.invalid_notes()
    runnable: dict[int, str] = {}
    fragments: list[int] = []
    failed: list[str] = []
    for ballot in pool.valid:
        source = _code_of(ballot)
        check = _compiles(source)
        if check == "module":
            runnable[ballot.index] = source
        elif check == "fragment":
            fragments.append(ballot.index)
        else:
            failed.append(check)
    if failed:
        notes.append(f"{_count(len(failed), 'candidate')} failed to compile ({failed[0]})")
    valid_ids = sorted([*runnable, *fragments])
    compiled = [b for b in pool.valid if b.index in set(valid_ids)]
    if not compiled:
        return VoteResult("exec", None, 0.0, pool.zero_scores(), ("no valid candidate to vote on", *notes))
    if fragments:
        notes.append(f"{_count(len(fragments), 'candidate')} compiled only as a fragment and were not run")
    sub = _Pool(compiled, pool.similarity, use_code=True)
    tests, bad_tests = _parse_tests(spec.tests)
    if bad_tests:
        notes.append(f"{_count(bad_tests, 'test')} did not parse and were ignored")
    inputs = [expression for expression in spec.inputs if _is_expression(expression)]
    if len(inputs) < len(spec.inputs):
        notes.append(f"{_count(len(spec.inputs) - len(inputs), 'input')} did not parse and were ignored")
    if not tests and not inputs:
        result = _medoid(sub, notes)
        return VoteResult(
            "exec", result.winner, result.agreement, pool.all_scores(result.scores), result.notes
        )

    outcomes = _run_candidates(runnable, tests, inputs, spec, notes)
    total_tests = sum(t.count for t in tests)
    blank = _Outcome([False] * total_tests, [None] * len(inputs), error="not run")
    outcome = {i: outcomes.get(i, blank) for i in valid_ids}
    timed_out = [i for i in valid_ids if outcome[i].timed_out]
    if timed_out:
        notes.append(f"{_count(len(timed_out), 'candidate')} ran out of time ({spec.timeout_s:g} s)")
    exited = [i for i in valid_ids if outcome[i].error == _EXITED]
    if exited:
        notes.append(f"{_count(len(exited), 'candidate')} ended the interpreter")
    passed = {i: sum(outcome[i].tests) for i in valid_ids}
    agree = _output_agreement(outcome, valid_ids, len(inputs))
    consensus = sub.consensus()
    winner = _best(
        valid_ids,
        lambda i: (passed[i], _rounded(agree[i]), outcome[i].clean, _rounded(consensus[i])),
    )
    scores: dict[int, float] = {}
    for i in valid_ids:
        if total_tests and inputs:
            scores[i] = (passed[i] + 0.9 * agree[i]) / (total_tests + 0.9)
        elif total_tests:
            scores[i] = passed[i] / total_tests
        else:
            scores[i] = agree[i]
    if inputs and any(o is not None for o in outcome[winner].outputs):
        signature = {i: _signature(outcome[i].outputs, i) for i in valid_ids}
    elif total_tests and passed[winner]:
        signature = {i: tuple(outcome[i].tests) for i in valid_ids}
    else:
        signature = {}
    if signature:
        votes = {b.index: 0 for b in pool.ballots}
        for i in valid_ids:
            votes[i] = sum(signature[j] == signature[i] for j in valid_ids)
        agreement = votes[winner] / len(valid_ids)
    else:
        votes = {}
        agreement = consensus[winner]
    if total_tests:
        notes.append(f"winner passed {passed[winner]} of {total_tests} tests")
    return VoteResult("exec", winner, _clip(agreement), pool.all_scores(scores), tuple(notes), votes)


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)```", re.S)


def _code_of(ballot: Ballot) -> str:
    if ballot.code is not None:
        return ballot.code
    fenced = _FENCE.search(ballot.text)
    return fenced.group(1) if fenced else ballot.text


def _compiles(source: str) -> str:
    """ "module" (runnable), "fragment" (valid only inside a function or loop body), else the error."""
    code = textwrap.dedent(source)
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)
        return "module"
    except (SyntaxError, ValueError) as error:
        first_error = error
    # A refactor may replace lines inside a function: `return`, `yield`, `await`, `break` are fine there.
    body = textwrap.indent(code, "        ")
    for wrapper in ("async def __fragment__():\n    while True:\n", "def __fragment__():\n    while True:\n"):
        try:
            compile(wrapper + body, "<candidate>", "exec", dont_inherit=True)
            return "fragment"
        except (SyntaxError, ValueError):
            continue
    if isinstance(first_error, SyntaxError):
        return f"line {first_error.lineno}: {first_error.msg}"
    return str(first_error)


def _parse_tests(sources: Sequence[str]) -> tuple[list[_Test], int]:
    tests, bad = [], 0
    for source in sources:
        code = textwrap.dedent(source)
        try:
            tree = ast.parse(code)
        except SyntaxError:
            bad += 1
            continue
        functions = tuple(
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
        )
        tests.append(_Test(code, functions))
    return tests, bad


def _is_expression(text: str) -> bool:
    try:
        ast.parse(text.strip(), mode="eval")
        return True
    except SyntaxError:
        return False


def _signature(outputs: Sequence[str | None], index: int) -> tuple:
    # An error agrees with nothing: two candidates failing alike is no evidence either is right.
    return tuple(o if o is not None else f"error-{index}" for o in outputs)


def _output_agreement(outcome: dict[int, _Outcome], ids: Sequence[int], n_inputs: int) -> dict[int, float]:
    """Per candidate: the mean, over the others, of the share of inputs where both give the same output."""
    if not n_inputs or len(ids) < 2:
        return {i: 0.0 for i in ids}
    agree = {}
    for i in ids:
        mine = outcome[i].outputs
        total = 0
        for j in ids:
            if j != i:
                total += sum(a is not None and a == b for a, b in zip(mine, outcome[j].outputs, strict=True))
        agree[i] = total / (n_inputs * (len(ids) - 1))
    return agree


def _run_candidates(
    runnable: dict[int, str],
    tests: Sequence[_Test],
    inputs: Sequence[str],
    spec: ExecSpec,
    notes: list[str],
) -> dict[int, _Outcome]:
    """Run the candidates one after another in one harness process, restarting it after a kill."""
    outcomes: dict[int, _Outcome] = {}
    pending = sorted(runnable)
    budget = spec.total_timeout_s
    if budget is None:
        budget = _STARTUP_S + len(pending) * (spec.timeout_s + _GRACE_S)
    deadline = time.monotonic() + budget
    total_tests = sum(t.count for t in tests)
    with tempfile.TemporaryDirectory(prefix="swarm-lsp-exec-") as workdir:
        while pending:
            job = {
                "candidates": [{"index": i, "code": textwrap.dedent(runnable[i])} for i in pending],
                "tests": [{"source": t.source, "functions": list(t.functions)} for t in tests],
                "inputs": list(inputs),
                "timeout": spec.timeout_s,
                "memory": _MEMORY_LIMIT,
                "file_size": _FILE_SIZE_LIMIT,
            }
            progressed = _run_harness(job, workdir, spec.timeout_s, deadline, outcomes, total_tests, inputs)
            pending = [i for i in pending if i not in outcomes]
            if pending and not progressed:
                notes.append(f"{_count(len(pending), 'candidate')} not run: the exec harness did not start")
                break
            if pending and time.monotonic() >= deadline:
                notes.append(f"{_count(len(pending), 'candidate')} not run: the exec time budget ran out")
                break
    return outcomes


def _run_harness(
    job: dict,
    workdir: str,
    timeout_s: float,
    deadline: float,
    outcomes: dict[int, _Outcome],
    total_tests: int,
    inputs: Sequence[str],
) -> bool:
    """One harness process; fills `outcomes`; False when it finished no candidate at all."""
    env = {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        # Proxies that point nowhere: a library that bypasses the socket block still cannot get out.
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "no_proxy": "",
    }
    posix = os.name == "posix"
    process = subprocess.Popen(
        [sys.executable, "-s", "-S", "-c", _HARNESS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        env=env,
        start_new_session=posix,
    )
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, name="swarm-lsp-exec-reader", daemon=True)
    reader.start()
    progressed = False
    current: int | None = None
    try:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(job).encode())
            process.stdin.close()
        wait_until = time.monotonic() + _STARTUP_S
        while True:
            remaining = min(wait_until, deadline) - time.monotonic()
            try:
                line = lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                if current is not None:
                    outcomes[current] = _Outcome([False] * total_tests, [None] * len(inputs), timed_out=True)
                    progressed = True
                return progressed
            if line is None:
                if current is not None:
                    outcomes[current] = _Outcome([False] * total_tests, [None] * len(inputs), error=_EXITED)
                    progressed = True
                return progressed
            event = json.loads(line)
            if event["event"] == "start":
                current = event["index"]
                wait_until = time.monotonic() + timeout_s + _GRACE_S
            else:
                outcomes[event["index"]] = _Outcome(
                    _pad(event["tests"], total_tests, False),
                    _pad(event["outputs"], len(inputs), None),
                    event["error"],
                    event["timed_out"],
                )
                progressed = True
                current = None
                wait_until = time.monotonic() + _GRACE_S
    finally:
        _kill(process, posix)
        reader.join(timeout=1.0)
        if not reader.is_alive() and process.stdout is not None:
            process.stdout.close()


def _pad(values: list, length: int, filler: object) -> list:
    return (values + [filler] * length)[:length]


def _kill(process: subprocess.Popen, group: bool) -> None:
    """Kill the harness and whatever the candidates started, even when the harness itself has exited."""
    # The harness is not reaped yet, so its pid (the group id) cannot have been reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        elif process.poll() is None:
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# -------------------------------------------------------------------------------------------- bench


def bench_overhead(
    sizes: Sequence[int] = (5, 9), tokens: int = 400, repeat: int = 3
) -> list[tuple[str, int, float]]:
    """Voting overhead per strategy: (strategy, candidates, best-of-`repeat` milliseconds).

    Synthetic candidates of about `tokens` tokens each; the judge is a stub, so its row is the
    prompt building, parsing and medoid agreement, not the model's time. The exec row runs every
    candidate with 3 tests and 2 inputs in one subprocess.
    """
    rows = []
    for n in sizes:
        texts = _bench_texts(n, tokens, random.Random(n))
        prose = [Ballot(i, t) for i, t in enumerate(texts)]
        short = [Ballot(i, ["yes", "Yes.", "no", "**yes**"][i % 4]) for i in range(n)]
        code = [Ballot(i, "", code=_bench_code(i, tokens)) for i in range(n)]
        spec = ExecSpec(
            tests=("assert f(3) == 3 * 4", "def test_zero():\n    assert f(0) == 0\n"),
            inputs=("f(5)", "f(7)"),
        )

        def stub_judge(prompt: str) -> str:
            return "The most consistent response is Response 2"

        cases: list[tuple[str, Callable[[], VoteResult]]] = [
            ("majority", lambda short=short: vote(short, "majority")),
            ("majority (long)", lambda prose=prose: vote(prose, "majority")),
            ("medoid", lambda prose=prose: vote(prose, "medoid")),
            ("judge", lambda prose=prose: vote(prose, "judge", judge=stub_judge)),
            ("exec", lambda code=code, spec=spec: vote(code, "exec", task_kind="refactor", exec_spec=spec)),
        ]
        for name, run in cases:
            best = float("inf")
            for _ in range(repeat):
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            rows.append((name, n, best * 1000))
    return rows


def _bench_texts(n: int, tokens: int, rng: random.Random) -> list[str]:
    words = [f"word{k}" for k in range(120)] + ["the", "a", "of", "to", "(", ")", ".", ","]
    base = [rng.choice(words) for _ in range(tokens)]
    texts = []
    for _ in range(n):
        mine = list(base)
        for _ in range(tokens // 6):
            mine[rng.randrange(tokens)] = rng.choice(words)
        texts.append(" ".join(mine))
    return texts


def _bench_code(i: int, tokens: int) -> str:
    lines = ["def f(x):", "    total = 0"]
    # Each line is about 12 tokens; candidate i differs in one constant, so outputs split in groups.
    for k in range(max(1, tokens // 12)):
        lines.append(f"    total = total + x * {k % 7} - x * {k % 7}  # step {k}")
    lines.append(f"    return total + x * {4 if i % 3 else 5}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for strategy, n, ms in bench_overhead():
        print(f"{strategy:16} n={n}  {ms:8.2f} ms")
