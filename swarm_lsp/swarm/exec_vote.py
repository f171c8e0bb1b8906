"""The `exec` strategy for Python code: run the candidates and let their behaviour vote.

Candidates that do not compile are dropped. With tests or inputs (an `ExecSpec`), the rest run in
the sandboxed harness (`exec_harness`) and are ranked by tests passed, then by how many other
candidates produce the same outputs (MBR-exec / CodeT), then by similarity; without them, the medoid
among the candidates that compile wins.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_lsp.swarm.ballots import (
    BallotPool,
    VoteResult,
    best_index,
    clip,
    code_of,
    medoid_vote,
    plural,
    rounded,
)
from swarm_lsp.swarm.exec_harness import INTERPRETER_EXITED, ExecTest, RunOutcome, run_candidates


@dataclass(frozen=True)
class ExecSpec:
    """How to check code candidates by running them."""

    language: str = "python"
    tests: Sequence[str] = ()
    """Test sources: assert statements, or pytest-style `test_*` functions (called without arguments)."""
    inputs: Sequence[str] = ()
    """Expressions evaluated in each candidate's namespace, e.g. "f(3)"; equal outputs mean agreement."""
    expected: Sequence[str | None] = ()
    """Per input, the output the answer must give (the original's, for a refactor); each match counts
    as a test passed. Empty: none expected."""
    timeout_s: float = 5.0
    """Per candidate: its module, tests and inputs together."""
    total_timeout_s: float | None = None
    """For the whole exec vote; None means `timeout_s` per candidate plus start-up."""


def exec_vote(pool: BallotPool, spec: ExecSpec) -> VoteResult:
    """The `exec` strategy over `pool`; a spec for another language falls back to the medoid."""
    if spec.language.lower() != "python":
        return medoid_vote(
            pool, [f"exec runs Python only, not {spec.language}; fell back to medoid among valid candidates"]
        )
    notes: list[str] = pool.invalid_notes()
    runnable: dict[int, str] = {}
    fragments: list[int] = []
    failed: list[str] = []
    for ballot in pool.valid:
        source = code_of(ballot)
        check = _compiles(source)
        if check == "module":
            runnable[ballot.index] = source
        elif check == "fragment":
            fragments.append(ballot.index)
        else:
            failed.append(check)
    if failed:
        notes.append(f"{plural(len(failed), 'candidate')} failed to compile ({failed[0]})")
    valid_ids = sorted([*runnable, *fragments])
    compiled = [b for b in pool.valid if b.index in set(valid_ids)]
    if not compiled:
        return VoteResult("exec", None, 0.0, pool.zero_scores(), ("no valid candidate to vote on", *notes))
    if fragments:
        notes.append(f"{plural(len(fragments), 'candidate')} compiled only as a fragment and were not run")
    sub = BallotPool(compiled, pool.similarity, use_code=True)
    tests, bad_tests = _parse_tests(spec.tests)
    if bad_tests:
        notes.append(f"{plural(bad_tests, 'test')} did not parse and were ignored")
    inputs = [expression for expression in spec.inputs if _is_expression(expression)]
    if len(inputs) < len(spec.inputs):
        notes.append(f"{plural(len(spec.inputs) - len(inputs), 'input')} did not parse and were ignored")
    if not tests and not inputs:
        result = medoid_vote(sub, notes)
        return VoteResult(
            "exec", result.winner, result.agreement, pool.all_scores(result.scores), result.notes
        )

    outcomes = run_candidates(
        runnable, tests, inputs, timeout_s=spec.timeout_s, total_timeout_s=spec.total_timeout_s, notes=notes
    )
    total_tests = sum(t.count for t in tests)
    blank = RunOutcome([False] * total_tests, [None] * len(inputs), error="not run")
    outcome = {i: outcomes.get(i, blank) for i in valid_ids}
    timed_out = [i for i in valid_ids if outcome[i].timed_out]
    if timed_out:
        notes.append(f"{plural(len(timed_out), 'candidate')} ran out of time ({spec.timeout_s:g} s)")
    exited = [i for i in valid_ids if outcome[i].error == INTERPRETER_EXITED]
    if exited:
        notes.append(f"{plural(len(exited), 'candidate')} ended the interpreter")
    # Expected outputs pair with the inputs one to one; a dropped input would misalign them.
    expected = list(spec.expected) if len(spec.expected) == len(spec.inputs) == len(inputs) else []
    matched = {
        i: sum(o is not None and o == e for o, e in zip(outcome[i].outputs, expected, strict=False))
        for i in valid_ids
    }
    passed = {i: sum(outcome[i].tests) + matched[i] for i in valid_ids}
    total_tests += len(expected)
    agree = _output_agreement(outcome, valid_ids, len(inputs))
    consensus = sub.consensus()
    winner = best_index(
        valid_ids,
        lambda i: (passed[i], rounded(agree[i]), outcome[i].clean, rounded(consensus[i])),
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
    if expected:
        notes.append(
            f"winner behaves like the original on {matched[winner]} of {len(expected)} generated calls"
        )
    if total_tests > len(expected):
        notes.append(
            f"winner passed {passed[winner] - matched[winner]} of {total_tests - len(expected)} tests"
        )
    return VoteResult("exec", winner, clip(agreement), pool.all_scores(scores), tuple(notes), votes)


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


def _parse_tests(sources: Sequence[str]) -> tuple[list[ExecTest], int]:
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
        tests.append(ExecTest(code, functions))
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


def _output_agreement(outcome: dict[int, RunOutcome], ids: Sequence[int], n_inputs: int) -> dict[int, float]:
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
