"""Grounded verification and the `grounded` vote, on a real (full-text) index of a small workspace:
what a candidate names is checked against the symbols table, and the vote weighs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace_support import write_tree

from swarm_lsp.config import load_settings
from swarm_lsp.swarm.ballots import Ballot
from swarm_lsp.swarm.verification import gather_evidence
from swarm_lsp.swarm.voting import choose_strategy, vote
from swarm_lsp.workspace import Workspace

FILES = {
    "shop/routing.py": "class Map:\n    def bind(self, host):\n        return host\n\n\nclass Rule:\n    pass\n",
    "shop/cart.py": "def total(prices):\n    return sum(prices)\n\n\nclass Cart:\n    def checkout(self):\n        return total([])\n",
    "shop/utils.py": "def slugify(text):\n    return text.lower()\n",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("ws")
    write_tree(root, FILES)
    data = tmp_path_factory.mktemp("data")
    loaded = load_settings(
        root, {"index": {"location": str(data), "embedder": "none"}}, env={}, user_file=data / "x.toml"
    )
    workspace = Workspace(root, loaded=loaded)
    workspace.index()
    yield workspace
    workspace.close()


def test_a_file_that_defines_what_was_asked_checks_out(workspace: Workspace) -> None:
    evidence = gather_evidence(
        "Which file defines the class Map?",
        {0: "The class `Map` is defined in `shop/routing.py`.", 1: "It is in shop/cart.py."},
        workspace,
    )
    assert evidence[0].supported == ("shop/routing.py",) and evidence[0].score == 1.0
    assert evidence[1].supported == () and evidence[1].neutral == ("shop/cart.py",)
    assert evidence[1].score == 0.5


def test_a_symbol_or_file_the_workspace_lacks_counts_against(workspace: Workspace) -> None:
    evidence = gather_evidence(
        "Which class defines the method bind?",
        {
            0: "The `Map` class defines bind.",
            1: "It is `UrlRouter.bind_to_host` in shop/router.py.",
            2: "Rule defines it.",
        },
        workspace,
    )
    assert evidence[0].supported == ("Map",) and evidence[0].score == 1.0
    assert (
        set(evidence[1].missing) == {"UrlRouter.bind_to_host", "shop/router.py"} and evidence[1].score == 0.0
    )
    # Rule exists, beside Map in the same file: related, though not the answer; never penalised.
    assert evidence[2].missing == ()


def test_a_citation_of_an_unrelated_file_is_not_evidence(workspace: Workspace) -> None:
    evidence = gather_evidence(
        "Which file defines the function slugify?",
        {0: "See shop/utils.py:1-2: slugify lowercases.", 1: "See shop/cart.py:1-2 for slugify."},
        workspace,
    )
    assert evidence[0].supported == ("shop/utils.py",)
    assert evidence[1].supported == () and evidence[1].neutral == ("shop/cart.py",)


def test_plain_prose_makes_no_claims(workspace: Workspace) -> None:
    answer = "It adds the prices up, e.g. a cart's, and returns the sum (i.e. a number)."
    (evidence,) = gather_evidence("What does total do?", {0: answer}, workspace).values()
    assert evidence.claims == 0 and evidence.score == 0.5


def test_the_grounded_vote_picks_the_checked_answer_over_the_popular_one(workspace: Workspace) -> None:
    question = "Which file defines the class Map?"
    answers = {
        0: "The class Map is defined in shop/cart.py.",
        1: "Map is defined in shop/cart.py.",
        2: "The class Map is defined in shop/routing.py.",
        3: "Map lives in shop/mapping.py.",
    }
    evidence = gather_evidence(question, answers, workspace)
    ballots = [Ballot(i, text) for i, text in answers.items()]
    assert choose_strategy(ballots, "ask", evidence=evidence) == "grounded"
    result = vote(ballots, "auto", task_kind="ask", evidence=evidence)
    assert result.strategy == "grounded" and result.winner == 2
    assert any("lacks" in note for note in result.notes)
    medoid = vote(ballots, "medoid", task_kind="ask")
    assert medoid.winner in (0, 1)


def test_agreement_is_higher_when_the_candidates_back_the_checked_answer(workspace: Workspace) -> None:
    question = "Which file defines the function total?"
    alone = {0: "total is in shop/cart.py.", 1: "shop/utils.py", 2: "shop/routing.py has it."}
    backed = {0: "total is in shop/cart.py.", 1: "In shop/cart.py.", 2: "shop/cart.py defines total."}
    results = []
    for answers in (alone, backed):
        evidence = gather_evidence(question, answers, workspace)
        results.append(vote([Ballot(i, t) for i, t in answers.items()], "grounded", evidence=evidence))
    assert results[0].winner == 0 and results[1].winner is not None
    assert results[1].agreement > results[0].agreement


def test_without_checkable_claims_auto_keeps_its_old_choice(workspace: Workspace) -> None:
    answers = {0: "It adds numbers.", 1: "It sums."}
    evidence = gather_evidence("What does total do?", answers, workspace)
    assert choose_strategy([Ballot(i, t) for i, t in answers.items()], "ask", evidence=evidence) == "majority"


def test_weights_decide_a_majority_between_models() -> None:
    # Two candidates of a weak model say one thing, one of a stronger model another.
    ballots = [
        Ballot(0, "shop/cart.py", weight=0.2),
        Ballot(1, "shop/cart.py", weight=0.2),
        Ballot(2, "shop/routing.py", weight=0.6),
    ]
    result = vote(ballots, "majority")
    assert result.winner == 2 and result.agreement == pytest.approx(0.6)
    assert vote([Ballot(b.index, b.text) for b in ballots], "majority").winner == 0


def test_weights_scale_the_grounded_score(workspace: Workspace) -> None:
    question = "Which file defines the class Map?"
    answers = {0: "Map is in shop/routing.py.", 1: "Map is in shop/routing.py, see `Map`."}
    evidence = gather_evidence(question, answers, workspace)
    even = vote([Ballot(i, t) for i, t in answers.items()], "grounded", evidence=evidence)
    weighed = vote(
        [Ballot(0, answers[0], weight=2.0), Ballot(1, answers[1], weight=0.5)], "grounded", evidence=evidence
    )
    assert weighed.winner == 0
    assert weighed.scores[0] > even.scores[0]


def test_model_weights_are_measured_for_known_models_and_a_prior_otherwise() -> None:
    from swarm_lsp.voter_models import MEASURED_ACCURACY, model_weight

    assert model_weight("SmolLM2-135M-Instruct.Q4_1") == max(0.05, MEASURED_ACCURACY["smollm2-135m-instruct"])
    assert model_weight("gemma-3-270m-q4_k_m") == max(0.05, MEASURED_ACCURACY["gemma-3-270m"])
    assert model_weight("qwen2.5-coder-7b-instruct") > model_weight("unknown-1b")


@pytest.mark.parametrize(
    ("strategy", "agreement", "low"),
    [("grounded", 0.2, True), ("grounded", 0.3, False), ("medoid", 0.3, True), ("majority", 0.6, False)],
)
def test_low_agreement_fires_where_each_strategy_measured_accuracy_drop(
    strategy: str, agreement: float, low: bool
) -> None:
    from swarm_lsp.swarm.runner import SwarmResult

    result = SwarmResult("ask", "", None, agreement, strategy, 0, [], [], 5, False)
    assert result.low_agreement is low


def test_without_an_index_nothing_is_checked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    loaded = load_settings(
        tmp_path, {"index": {"location": str(data), "embedder": "none"}}, env={}, user_file=data / "x.toml"
    )
    with Workspace(tmp_path, loaded=loaded) as empty:
        assert gather_evidence("Which file defines Map?", {0: "shop/routing.py"}, empty) == {}
