"""Inline completion without a model: the prompt layout, cutting a suggestion to what belongs at
the cursor, choosing among voters, and the cache that serves a suggestion the user types into."""

from __future__ import annotations

import pytest

from swarm_lsp.completion import SuggestionCache, names_by_use
from swarm_lsp.models.base import GenerationRequest
from swarm_lsp.swarm.fill import FillRequest, choose, fill_prompt, trim_suggestion


def request(before: str, after: str = "", snippets: tuple[str, ...] = ()) -> FillRequest:
    return FillRequest("pkg/use.py", "python", before, after, snippets)


def test_the_prompt_keeps_what_changes_at_the_end():
    plain = fill_prompt(request("def f():\n    return ", "\n\nx = 1", ("pkg/m.py:1: def add(a, b):",)), None)
    assert plain.endswith("def f():\n    return ")
    assert plain.startswith(
        "# Related code in this repository:\n# pkg/m.py:1: def add(a, b):\n# File: pkg/use.py\n"
    )
    fim = fill_prompt(request("x = ", "\ny = 2"), ("<PRE>", "<SUF>", "<MID>"))
    assert fim == "<PRE>x = <SUF>\ny = 2<MID>"
    unknown = FillRequest("notes.txt", "text", "hello ", "", ("a.py:1: def a():",))
    assert fill_prompt(unknown, None) == "hello "  # no comment syntax: no context header


@pytest.mark.parametrize(
    ("before", "after", "generated", "expected"),
    [
        # Mid-line: one line only, and never the text already after the cursor.
        ("    total = add(", ")", "total, item)\n    return total", "total, item"),
        ("x = compute(", "", "a, b)\nprint(x)", "a, b)"),
        # A closer that the line did not open ends the suggestion.
        ("    return value", "", " + 1)\n", " + 1"),
        # At a blank line inside a block: the block, up to a dedent or a blank line.
        (
            "def f(items):\n    ",
            "",
            "for item in items:\n        yield item\nprint('done')",
            "for item in items:\n        yield item",
        ),
        ("def f(items):\n    ", "", "total = 0\n\n    return total", "total = 0"),
        # A leading line break on a blank line is the line the cursor is already on.
        ("def f(items):\n    ", "", "\n    return len(items)", "return len(items)"),
        # The lines that follow the cursor are not written again.
        (
            "def f(items):\n    ",
            "\n    return total",
            "total = sum(items)\n    return total",
            "total = sum(items)",
        ),
    ],
)
def test_a_suggestion_is_cut_to_what_belongs_at_the_cursor(before, after, generated, expected):
    assert trim_suggestion(generated, request(before, after)) == expected


def test_a_suggestion_cut_short_by_the_token_limit_loses_its_unfinished_line():
    text = "if ready:\n        start()\n        sto"
    assert trim_suggestion(text, request("def run():\n    "), cut_short=True) == "if ready:\n        start()"
    assert trim_suggestion("x + y", request("    return "), cut_short=True) == "x + y"


def test_voters_choose_the_most_common_suggestion_and_ties_go_to_the_greedy_one():
    assert choose(["a + b", "a - b", "a  +  b", ""]) == "a + b"
    assert choose(["first", "second"]) == "first"
    assert choose(["", "  "]) == ""


def test_typing_into_a_shown_suggestion_serves_the_rest_of_it():
    cache = SuggestionCache()
    cache.remember("a.py", "x = ", "\n", "compute(1, 2)")
    assert cache.remainder("a.py", "x = ", "\n") == "compute(1, 2)"
    assert cache.remainder("a.py", "x = comp", "\n") == "ute(1, 2)"
    assert cache.remainder("a.py", "x = cons", "\n") is None  # typed something else
    assert cache.remainder("a.py", "x = compute(1, 2)", "\n") is None  # all of it typed
    assert cache.remainder("b.py", "x = comp", "\n") is None
    assert cache.remainder("a.py", "x = comp", "\nchanged") is None  # the text after the cursor changed


def test_context_names_come_most_used_first_without_keywords():
    names = names_by_use(["import os", "def handle(request):", "    user = load_user(request.session)"])
    assert names[:4] == ["request", "handle", "user", "load_user"]
    assert "def" not in names and "import" not in names and "os" not in names  # too short


def test_a_raw_prompt_request_takes_no_messages():
    assert GenerationRequest(messages=[], prompt="def f():").prompt == "def f():"
    with pytest.raises(ValueError, match="at least one message, or a raw prompt"):
        GenerationRequest(messages=[])
