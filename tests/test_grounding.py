from __future__ import annotations

import pytest

from swarm_lsp.swarm.grounding import FLAG, Citation, check_citations, find_citations, sources_line

LINES = {"src/app.py": 40, "src/db/models.py": 120, "README.md": 12}


@pytest.mark.parametrize(
    ("text", "path", "start", "end"),
    [
        ("see src/app.py:12-20.", "src/app.py", 12, 20),
        ("see src/app.py:12.", "src/app.py", 12, 12),
        ("see src/app.py#L12-L20", "src/app.py", 12, 20),
        ("see src/app.py#L7", "src/app.py", 7, 7),
        ("see `src/app.py:12-20` for it", "src/app.py", 12, 20),
        ("see ./src/app.py:3-4", "src/app.py", 3, 4),
        ("(src/db/models.py:1-9)", "src/db/models.py", 1, 9),
        ("at src/app.py:12:5", "src/app.py", 12, 12),
        ("README.md:2-3 says", "README.md", 2, 3),
        ("Makefile:4", "Makefile", 4, 4),
        ("src/app.py:L3-L9", "src/app.py", 3, 9),
    ],
)
def test_citation_formats(text, path, start, end):
    [citation] = find_citations(text)
    assert (citation.path, citation.start, citation.end) == (path, start, end)


def test_span_covers_the_backticks():
    text = "see `src/app.py:12-20` for it"
    [citation] = find_citations(text)
    assert text[slice(*citation.span)] == "`src/app.py:12-20`"


@pytest.mark.parametrize(
    "text",
    [
        "visit http://example.com:8080/x",
        "at 10:30 we met",
        "Python:3 is not a file",
        "e.g.:12 is prose",
        "```\nhost = 'db.example.org:5432'\n```",
    ],
)
def test_things_that_are_not_citations(text):
    assert find_citations(text) == []


def test_valid_citations_are_kept_and_invalid_ones_flagged_and_stripped():
    text = (
        "Requests start in src/app.py:10-20 and hit the models (see src/db/models.py:500-510).\n"
        "The cache lives in `src/cache.py:1-5`, README.md#L2 explains it."
    )
    report = check_citations(text, LINES)
    assert [c.label for c in report.valid] == ["src/app.py:10-20", "README.md:2"]
    reasons = dict((c.label, reason) for c, reason in report.invalid)
    assert reasons == {
        "src/db/models.py:500-510": "src/db/models.py has 120 lines",
        "src/cache.py:1-5": "src/cache.py is not a file in the workspace",
    }
    assert not report.grounded
    assert report.text_flagged == (
        f"Requests start in src/app.py:10-20 and hit the models (see src/db/models.py:500-510 {FLAG}).\n"
        f"The cache lives in `src/cache.py:1-5` {FLAG}, README.md#L2 explains it."
    )
    assert report.text_stripped == (
        "Requests start in src/app.py:10-20 and hit the models.\n"
        "The cache lives in, README.md#L2 explains it."
    )


def test_past_the_last_line_is_invalid_but_the_last_line_is_fine():
    report = check_citations("src/app.py:40 and src/app.py:39-41", LINES)
    assert [c.label for c in report.valid] == ["src/app.py:40"]
    assert [c.label for c, _ in report.invalid] == ["src/app.py:39-41"]


def test_reversed_and_zero_ranges_are_invalid():
    report = check_citations("src/app.py:20-10 and src/app.py:0", LINES)
    assert [reason for _, reason in report.invalid] == [
        "the range 20-10 is reversed",
        "line numbers start at 1",
    ]


def test_stripping_lists_and_bullets_cleanly():
    text = "Sources: src/app.py:1-2, src/gone.py:3-4, README.md:1\n- src/gone.py:9\n- src/app.py:5\nDone."
    report = check_citations(text, LINES)
    assert report.text_stripped == "Sources: src/app.py:1-2, README.md:1\n- src/app.py:5\nDone."


def test_a_unique_suffix_resolves_to_the_known_path():
    report = check_citations("see models.py:3-4 and app.py:99", LINES)
    assert [c.label for c in report.valid] == ["src/db/models.py:3-4"]
    assert [reason for _, reason in report.invalid] == ["src/app.py has 40 lines"]


def test_known_paths_without_line_counts_are_trusted():
    report = check_citations("see lib/big.py:9000", {}, known_paths={"lib/big.py"})
    assert report.valid and not report.invalid


def test_no_citations_means_nothing_to_flag():
    report = check_citations("Nothing cited here.", LINES)
    assert report.grounded and report.text_flagged == report.text_stripped == "Nothing cited here."


def test_sources_line_merges_and_dedupes():
    citations = [
        Citation("src/app.py", 10, 20),
        Citation("README.md", 1, 1),
        Citation("src/app.py", 15, 30),
        Citation("src/app.py", 50, 60),
    ]
    assert sources_line(citations) == "Sources: src/app.py:10-30, src/app.py:50-60, README.md:1"
    assert sources_line(["src/app.py:1-3", "src/app.py:1-3", "src/app.py (outline)"]) == (
        "Sources: src/app.py:1-3, src/app.py (outline)"
    )
    assert sources_line([]) == ""
