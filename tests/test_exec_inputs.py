"""Checks generated for code answers when none are given: calls of the selected functions with
generated arguments, the original's outputs as what a refactor must keep, and the exec vote that
ranks candidates by them (in the real sandboxed harness)."""

from __future__ import annotations

from swarm_lsp.swarm.ballots import Ballot
from swarm_lsp.swarm.exec_inputs import candidate_calls, generated_checks
from swarm_lsp.swarm.tasks import Task, TextRange
from swarm_lsp.swarm.voting import vote

SOURCE = '''"""Prices."""


def total(prices):
    result = 0
    for price in prices:
        result = result + price
    return result
'''


def refactor(kind: str = "refactor") -> Task:
    return Task(kind, "Use the built-in sum.", path="shop/cart.py", range=TextRange(4, 8), file_text=SOURCE)


def test_calls_are_generated_for_plain_functions_only() -> None:
    calls = candidate_calls("def total(prices):\n    return sum(prices)\n")
    assert calls and all(call.startswith("total(") for call in calls)
    assert calls == candidate_calls("def total(prices):\n    return sum(prices)\n")  # deterministic
    assert candidate_calls("def bind(self, host):\n    return host\n") == []
    assert candidate_calls("def f(*, key):\n    return key\n") == []
    assert candidate_calls("def f(a, b, c, d):\n    return a\n") == []
    assert candidate_calls("not python (") == []
    assert candidate_calls("def ping():\n    return 1\n") == ["ping()"]


def test_a_refactor_gets_the_originals_answers_as_expected_outputs() -> None:
    spec = generated_checks(refactor())
    assert spec is not None and len(spec.inputs) >= 2 and len(spec.expected) == len(spec.inputs)
    # Outputs are compared as digests of their repr: different sums of different lists.
    assert len(set(spec.expected)) > 1
    assert all(call.startswith("total(") for call in spec.inputs)


def test_a_fix_is_checked_by_agreement_only() -> None:
    spec = generated_checks(refactor("fix"))
    assert spec is not None and spec.inputs and spec.expected == ()


def test_the_exec_vote_prefers_the_candidate_that_behaves_like_the_original() -> None:
    spec = generated_checks(refactor())
    assert spec is not None
    candidates = [
        "def total(prices):\n    return len(prices)\n",  # changes behaviour
        "def total(prices):\n    return len(prices)\n",  # the same wrong change: a majority of two
        "def total(prices):\n    return sum(prices)\n",  # keeps behaviour
        "def total(prices) return 0\n",  # does not compile
    ]
    result = vote(
        [Ballot(i, c, code=c) for i, c in enumerate(candidates)], "auto", task_kind="refactor", exec_spec=spec
    )
    assert result.strategy == "exec" and result.winner == 2
    assert any("behaves like the original" in note for note in result.notes), result.notes
