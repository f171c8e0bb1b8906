from __future__ import annotations

import random
import socket
import time

import pytest

from bench.voting_overhead import bench_overhead
from swarm_lsp.swarm.ballots import Ballot, VoteResult
from swarm_lsp.swarm.exec_vote import ExecSpec
from swarm_lsp.swarm.judge import build_judge_prompt, parse_judge_pick
from swarm_lsp.swarm.short_answers import final_answer, normalize_answer
from swarm_lsp.swarm.similarity import rouge_l, tokenize
from swarm_lsp.swarm.voting import choose_strategy, vote


def ballots(*texts: str) -> list[Ballot]:
    return [Ballot(i, text) for i, text in enumerate(texts)]


def code_ballots(*sources: str) -> list[Ballot]:
    return [Ballot(i, f"```python\n{source}```", code=source) for i, source in enumerate(sources)]


def assert_well_formed(result: VoteResult, given: list[Ballot]) -> None:
    assert set(result.scores) == {b.index for b in given}
    assert 0.0 <= result.agreement <= 1.0
    for b in given:
        if not b.valid:
            assert result.scores[b.index] == 0.0
    if result.winner is not None:
        assert next(b for b in given if b.index == result.winner).valid


# ------------------------------------------------------------------------------------------ majority


def test_clear_majority():
    given = ballots("42", "41", "42", "The answer is 42.", "**42.0**")
    result = vote(given, "majority")
    assert_well_formed(result, given)
    assert result.strategy == "majority"
    assert result.winner in {0, 2, 3, 4}
    assert result.agreement == pytest.approx(0.8)
    assert result.votes == {0: 4, 1: 1, 2: 4, 3: 4, 4: 4}
    assert result.scores[1] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (["yes", "Yes.", "**yes**", "`YES`", "True", "Yes, it does.", "'yes'"], "yes"),
        (["no", "No.", "false", "**No** - it is never called"], "no"),
        (["1,000", "1000", "1000.0", "1e3", "1,000."], "1000"),
        (["2", "2.0", "2.00", "+2"], "2"),
        (["0.5", ".5", "0.50"], "0.5"),
        (["a/b.py", "./a/b.py", "a\\b.py", "`./a//b.py`", ".\\a\\b.py"], "a/b.py"),
        (["parse_config", "`parse_config()`", "Parse_Config", "parse_config."], "parse_config"),
        (["The answer is src/app.py.", "Answer: src/app.py", "Final answer: `src/app.py`"], "src/app.py"),
    ],
)
def test_normalisation(variants, expected):
    assert {normalize_answer(v) for v in variants} == {expected}


def test_normalisation_keeps_distinct_answers_apart():
    assert normalize_answer("no such function") == "no such function"
    assert normalize_answer("n") == "n"
    assert normalize_answer("1.5") != normalize_answer("15")
    assert normalize_answer("a/b.py") != normalize_answer("b/a.py")


def test_final_answer_of_a_long_answer():
    long = "Let me look at the call sites first.\nThey all go through the loader.\nAnswer: **load_config**"
    assert final_answer(long) == "load_config"
    assert final_answer("load_config\n\nIt is defined in config.py and called twice.") == "load_config"
    assert normalize_answer(long) == "load_config"


def test_tie_goes_to_the_answer_closer_to_the_rest():
    # parse_config and load each have two votes; parse_config_file is closer to parse_config.
    given = ballots("load", "parse_config", "load", "parse_config", "parse_config_file")
    result = vote(given, "majority")
    assert result.winner in {1, 3}
    assert result.agreement == pytest.approx(0.4)
    assert any("tied" in note for note in result.notes)


def test_exact_tie_goes_to_the_lowest_index_in_any_order():
    given = [Ballot(0, "no"), Ballot(1, "yes")]
    assert vote(given, "majority").winner == 0
    assert vote(list(reversed(given)), "majority").winner == 0
    swapped = [Ballot(0, "yes"), Ballot(1, "no")]
    assert vote(swapped, "majority").winner == 0


def test_majority_is_independent_of_ballot_order():
    given = ballots("a/b.py", "c.py", "./a/b.py", "c.py", "d.py", "C.py")
    expected = vote(given, "majority")
    rng = random.Random(7)
    for _ in range(5):
        shuffled = list(given)
        rng.shuffle(shuffled)
        assert vote(shuffled, "majority") == expected


def test_all_different_answers():
    given = ballots("alpha", "beta", "gamma", "delta")
    result = vote(given, "majority")
    assert result.winner == 0
    assert result.agreement == pytest.approx(0.25)
    assert vote(given, "majority") == result


def test_empty_answers_do_not_outvote_a_real_one():
    given = ballots("", "  ", "**``**", "42", "41")
    result = vote(given, "majority")
    assert result.winner == 3
    assert result.votes[0] == 0
    assert any("3 empty answers did not count" in note for note in result.notes)
    assert vote(ballots("", " "), "majority").winner == 0
    assert vote(ballots("", "", "", SENTENCE, SENTENCE + " Yes."), "medoid").winner == 3


# -------------------------------------------------------------------------------------------- medoid

SENTENCE = (
    "The function load_config reads the TOML file at the workspace root, merges it over the user "
    "defaults and validates every key, raising ConfigError that names the file, the key and the value."
)


def test_medoid_outlier_never_wins():
    near = [
        SENTENCE,
        SENTENCE.replace("reads", "parses"),
        SENTENCE.replace("every key", "each key"),
        SENTENCE.replace("merges it over", "layers it on"),
    ]
    outlier = "It downloads the model weights from Hugging Face and caches them in the home directory."
    for position in range(5):
        texts = list(near)
        texts.insert(position, outlier)
        given = ballots(*texts)
        result = vote(given, "medoid")
        assert_well_formed(result, given)
        assert result.winner != position
        assert result.agreement > 0.7  # the mean over the others includes the outlier
        assert result.scores[position] < 0.3


def test_medoid_all_different_is_deterministic_and_low():
    given = ballots("red green blue", "one two three", "cat dog bird")
    result = vote(given, "medoid")
    assert result.winner == 0
    assert result.agreement == 0.0


def test_medoid_with_a_given_similarity():
    lengths = ballots("aaaa", "aa", "aaa", "a")

    def by_length(a: str, b: str) -> float:
        return 1 - abs(len(a) - len(b)) / 4

    assert vote(lengths, "medoid", similarity=by_length).winner == 1


def test_medoid_is_independent_of_ballot_order():
    given = [Ballot(i, SENTENCE.replace("key", f"key {i % 2}")) for i in range(6)]
    expected = vote(given, "medoid")
    assert vote(list(reversed(given)), "medoid") == expected


def test_tokenize_splits_identifiers_and_punctuation():
    assert tokenize("parseHTTPResponse(snake_case, 42)") == [
        "parse", "http", "response", "(", "snake", "case", ",", "42", ")",
    ]  # fmt: skip


def _reference_lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def test_rouge_l_matches_a_reference_lcs():
    rng = random.Random(3)
    for _ in range(30):
        a = [rng.choice("abcde") for _ in range(rng.randrange(1, 60))]
        b = [rng.choice("abcde") for _ in range(rng.randrange(1, 60))]
        expected = 2 * _reference_lcs(a, b) / (len(a) + len(b))
        assert rouge_l(" ".join(a), " ".join(b)) == pytest.approx(expected)
    assert rouge_l("same text", "same text") == 1.0
    assert rouge_l("", "") == 0.0
    assert rouge_l("x", "") == 0.0


def test_medoid_is_fast_for_nine_long_candidates():
    rng = random.Random(1)
    words = [f"w{k}" for k in range(100)]
    base = [rng.choice(words) for _ in range(500)]
    texts = []
    for _ in range(9):
        mine = list(base)
        for _ in range(80):
            mine[rng.randrange(500)] = rng.choice(words)
        texts.append(" ".join(mine))
    started = time.perf_counter()
    vote(ballots(*texts), "medoid")
    assert time.perf_counter() - started < 0.5  # ~10 ms on an idle core; generous for a shared machine


# --------------------------------------------------------------------------------------------- judge


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("The most consistent response is Response 3", 4, 2),
        ("The most consistent response is Response 3.\nIt agrees with 1 and 4.", 4, 2),
        ("response #3", 4, 2),
        ("3", 4, 2),
        ("**3**", 4, 2),
        ("Response 3.", 4, 2),
        ("Answer: Response 2.", 4, 1),
        ("answer: 2", 4, 1),
        ("The most consistent response is **Response 1**", 2, 0),
        ("The most consistent response is response two", 3, 1),
        ("Responses 1 and 3 disagree; Response 2 is the most consistent.", 3, 1),
        ("Response 5", 4, None),
        ("0", 4, None),
        ("The most consistent response is Response 9", 4, None),
        ("", 4, None),
        ("I cannot decide.", 4, None),
        ("Response 1 and Response 2 both look fine", 3, None),
    ],
)
def test_parse_judge_pick(text, n, expected):
    assert parse_judge_pick(text, n) == expected


def test_judge_prompt_lists_only_the_given_responses():
    given = [Ballot(0, "first"), Ballot(4, "second"), Ballot(7, "x" * 5000)]
    prompt = build_judge_prompt("What does f do?", given)
    assert "Question:\nWhat does f do?" in prompt
    assert "Response 1:\nfirst" in prompt and "Response 2:\nsecond" in prompt and "Response 3:" in prompt
    assert "Response 4" not in prompt
    assert "The most consistent response is Response K" in prompt
    assert len(prompt) < 3000


def test_judge_pick_maps_back_to_the_valid_ballots():
    given = [
        Ballot(0, SENTENCE),
        Ballot(1, "broken", valid=False, invalid_reason="edit does not parse"),
        Ballot(2, SENTENCE.replace("reads", "parses")),
        Ballot(3, SENTENCE.replace("key", "entry")),
    ]
    prompts = []

    def judge(prompt: str) -> str:
        prompts.append(prompt)
        return "The most consistent response is Response 2"

    result = vote(given, "judge", judge=judge, question="What does load_config do?")
    assert result.strategy == "judge"
    assert result.winner == 2
    assert "broken" not in prompts[0]
    assert result.agreement > 0.8
    assert_well_formed(result, given)


@pytest.mark.parametrize(
    "reply",
    ["", "I think they are all good.", "Response 9", "Response 1 or Response 3", "-1", "The best is none"],
)
def test_malformed_judge_output_falls_back_to_medoid(reply):
    given = ballots(
        "It downloads model weights.", SENTENCE, SENTENCE.replace("reads", "parses"), SENTENCE + " Fine."
    )
    result = vote(given, "judge", judge=lambda prompt: reply)
    assert result.strategy == "medoid"
    assert result.winner == vote(given, "medoid").winner
    assert result.winner != 0
    assert any("judge output unparseable" in note and "medoid" in note for note in result.notes)


def test_failing_or_missing_judge_falls_back_to_medoid():
    given = ballots(SENTENCE, SENTENCE + " Also.", "Something else entirely.")

    def broken(prompt: str) -> str:
        raise TimeoutError("model took too long")

    failed = vote(given, "judge", judge=broken)
    assert failed.strategy == "medoid" and failed.winner in {0, 1}
    assert any("judge failed" in note for note in failed.notes)
    missing = vote(given, "judge")
    assert missing.strategy == "medoid"
    assert any("no judge" in note for note in missing.notes)


# ---------------------------------------------------------------------------------------------- exec

CORRECT_A = "def add(a, b):\n    return a + b\n"
CORRECT_B = "def add(x, y):\n    total = x\n    total += y\n    return total\n"
WRONG = "def add(a, b):\n    return a - b\n"
SYNTAX_ERROR = "def add(a, b)\n    return a + b\n"
LOOPS = "def add(a, b):\n    while True:\n        pass\n"
ADD_TESTS = (
    "assert add(1, 2) == 3",
    "def test_zero():\n    assert add(0, 0) == 0\n\ndef test_neg():\n    assert add(-1, 1) == 0\n",
)


def test_exec_picks_a_correct_candidate_and_bounds_a_loop():
    given = code_ballots(SYNTAX_ERROR, WRONG, LOOPS, CORRECT_A, CORRECT_B)
    spec = ExecSpec(tests=ADD_TESTS, inputs=("add(2, 3)", "add('a', 'b')"), timeout_s=0.5)
    started = time.monotonic()
    result = vote(given, "exec", task_kind="fix", exec_spec=spec)
    elapsed = time.monotonic() - started
    assert elapsed < 4
    assert result.strategy == "exec"
    assert result.winner in {3, 4}
    assert result.scores[0] == 0.0  # does not compile
    assert result.scores[2] == 0.0  # timed out before passing anything
    # All tests passed; outputs agree with one of the three other candidates that compile.
    assert result.scores[3] == result.scores[4] == pytest.approx((3 + 0.9 / 3) / 3.9)
    assert result.scores[1] < result.scores[3]
    assert result.votes[3] == result.votes[4] == 2
    assert result.agreement == pytest.approx(2 / 4)  # of the four that compile
    notes = " | ".join(result.notes)
    assert "1 candidate failed to compile" in notes
    assert "1 candidate ran out of time" in notes
    assert vote(given, "exec", task_kind="fix", exec_spec=spec) == result


def test_exec_survives_a_candidate_that_swallows_its_alarm():
    stubborn = "def add(a, b):\n    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass\n"
    given = code_ballots(stubborn, CORRECT_A)
    spec = ExecSpec(tests=ADD_TESTS, timeout_s=0.2)
    started = time.monotonic()
    result = vote(given, "exec", exec_spec=spec)
    assert time.monotonic() - started < 5
    assert result.winner == 1
    assert result.scores[1] == pytest.approx(1.0)


def test_exec_ranks_by_output_agreement_without_tests():
    square = "def f(x):\n    return x * x\n"
    square_too = "def f(x):\n    return x ** 2\n"
    cube = "def f(x):\n    return x * x * x\n"
    given = code_ballots(cube, square, square_too)
    result = vote(given, "exec", exec_spec=ExecSpec(inputs=("f(3)", "f(-2)")))
    assert result.winner == 1
    assert result.votes == {0: 1, 1: 2, 2: 2}
    assert result.agreement == pytest.approx(2 / 3)


def test_exec_candidate_code_has_no_network():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        probe = (
            "import socket, _socket\n"
            "def reach(kind):\n"
            "    try:\n"
            "        if kind == 'connect':\n"
            f"            socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "        elif kind == 'socket':\n"
            "            socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "        else:\n"
            "            _socket.socket()\n"
            "        return True\n"
            "    except OSError:\n"
            "        return False\n"
        )
        tests = (
            "assert reach('connect') is False",
            "assert reach('socket') is False",
            "assert reach('raw') is False",
        )
        result = vote(code_ballots(probe), "exec", exec_spec=ExecSpec(tests=tests, timeout_s=2))
        assert result.winner == 0
        assert result.scores[0] == pytest.approx(1.0), result.notes
    finally:
        listener.close()


def test_exec_without_tests_or_inputs_ranks_compiling_candidates_by_similarity():
    broken = "def add(a, b):\n    return a +\n"
    given = code_ballots(broken, broken, broken, CORRECT_A, WRONG)
    result = vote(given, "exec", exec_spec=ExecSpec())
    assert result.strategy == "exec"
    assert result.winner in {3, 4}
    assert result.scores[0] == result.scores[1] == result.scores[2] == 0.0
    assert any("3 candidates failed to compile" in note for note in result.notes)


def test_exec_accepts_a_function_body_fragment_without_running_it():
    fragment = "    value = compute(x)\n    return value + 1\n"
    result = vote(code_ballots(fragment, "return (\n"), "exec", exec_spec=ExecSpec(tests=("assert True",)))
    assert result.winner == 0
    assert any("fragment" in note for note in result.notes)


def test_exec_for_another_language_falls_back_to_medoid():
    given = code_ballots("fn main() {}", "fn main() { }", "fn other() {}")
    result = vote(given, "exec", exec_spec=ExecSpec(language="rust"))
    assert result.strategy == "medoid"
    assert any("Python only" in note for note in result.notes)


# ------------------------------------------------------------------------------- invalid and auto


@pytest.mark.parametrize("strategy", ["majority", "medoid", "judge", "exec", "auto"])
def test_invalid_ballots_never_win(strategy):
    # The invalid refactor is the most common answer; it must still lose.
    broken = "def add(a, b):\n    return a + b + \n"
    given = [
        Ballot(0, broken, code=broken, valid=False, invalid_reason="edit does not parse"),
        Ballot(1, broken, code=broken, valid=False, invalid_reason="edit does not parse"),
        Ballot(2, broken, code=broken, valid=False, invalid_reason="edit does not parse"),
        Ballot(3, CORRECT_A, code=CORRECT_A),
        Ballot(4, CORRECT_B, code=CORRECT_B),
    ]
    result = vote(
        given,
        strategy,
        task_kind="refactor",
        judge=lambda prompt: "The most consistent response is Response 1",
        exec_spec=ExecSpec(),
    )
    assert result.winner in {3, 4}
    assert_well_formed(result, given)
    assert any("3 candidates invalid" in note for note in result.notes)


def test_a_refactor_that_does_not_parse_never_wins_even_when_unflagged():
    broken = "def add(a, b):\n    return a + b + \n"
    given = code_ballots(broken, broken, broken, CORRECT_A)
    for kind in ("refactor", "fix"):
        assert vote(given, "auto", task_kind=kind, exec_spec=ExecSpec()).winner == 3


@pytest.mark.parametrize("strategy", ["majority", "medoid", "judge", "exec", "auto"])
def test_all_invalid_gives_no_winner(strategy):
    given = [Ballot(i, "x", valid=False, invalid_reason="empty edit") for i in range(3)]
    result = vote(given, strategy, judge=lambda prompt: "Response 1", exec_spec=ExecSpec())
    assert result.winner is None
    assert result.agreement == 0.0
    assert result.scores == {0: 0.0, 1: 0.0, 2: 0.0}
    assert any("no valid candidate" in note for note in result.notes)
    assert vote([], strategy).winner is None


def test_single_valid_candidate_wins_with_full_agreement():
    given = [Ballot(0, "bad", valid=False), Ballot(1, "the only one")]
    for strategy in ("majority", "medoid", "judge"):
        result = vote(given, strategy, judge=lambda prompt: "Response 1")
        assert (result.winner, result.agreement) == (1, 1.0)


def judge_stub(prompt: str) -> str:
    return "Response 1"


@pytest.mark.parametrize(
    ("kind", "texts", "judge", "spec", "expected"),
    [
        ("ask", ["yes", "no", "Yes."], None, None, "majority"),
        ("ask", ["yes", SENTENCE], None, None, "medoid"),
        ("explain", [SENTENCE] * 3, None, None, "medoid"),
        ("explain", [SENTENCE] * 3, judge_stub, None, "judge"),
        ("chat", [SENTENCE] * 2, judge_stub, None, "medoid"),
        ("document", [SENTENCE] * 4, judge_stub, None, "medoid"),
        ("document", [CORRECT_A] * 2, None, ExecSpec(), "exec"),
        ("refactor", [CORRECT_A] * 2, judge_stub, ExecSpec(), "exec"),
        ("fix", [CORRECT_A] * 2, None, ExecSpec(language="go"), "medoid"),
        ("refactor", [CORRECT_A] * 2, None, None, "medoid"),
        ("something-new", ["a"], None, None, "medoid"),
    ],
)
def test_auto_chooses_by_task_kind(kind, texts, judge, spec, expected):
    given = ballots(*texts)
    assert choose_strategy(given, kind, judge=judge, exec_spec=spec) == expected
    assert vote(given, "auto", task_kind=kind, judge=judge, exec_spec=spec).strategy == expected


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="majority"):
        vote(ballots("a"), "plurality")


def test_overhead_per_strategy():
    rows = bench_overhead(sizes=(5, 9), tokens=400, repeat=1)
    for strategy, n, ms in rows:
        print(f"voting overhead {strategy:16} n={n}: {ms:8.2f} ms")
    assert {strategy for strategy, _, _ in rows} >= {"majority", "medoid", "judge", "exec"}
