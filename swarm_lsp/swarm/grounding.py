"""Grounding: find the path:line citations in an answer and check that the lines they point to exist.

Answers are asked to cite the code they rely on as ``path:start-end``. Models, small ones above
all, also write ``path:12``, ``path#L12-L20``, ``./path:12`` or wrap the citation in backticks, and
they invent citations: a file that is not in the workspace, or lines past a file's end. Such a
citation is *invalid*. `check_citations` returns the valid ones (for a "Sources:" footer) and the
answer twice over: with every invalid citation flagged (what the user sees by default) and with
them removed (for callers that prefer a clean text).

Citations inside fenced code blocks are code, not citations (``host.example.com:8080``), and are
left alone.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

__all__ = [
    "FLAG",
    "Citation",
    "GroundingReport",
    "check_citations",
    "find_citations",
    "sources_line",
]

FLAG = "[citation not found]"
"""Appended (after a space) to each invalid citation in `GroundingReport.text_flagged`."""

_EXTENSIONLESS = (
    "Makefile|Dockerfile|Containerfile|Justfile|Gemfile|Rakefile|Procfile|Vagrantfile"
    "|LICENSE|README|CODEOWNERS"
)
_CITATION = re.compile(
    r"""
    (?<![\w/.@:\\~-])                    # not the tail of a longer word, path or URL
    (?P<tick>`?)
    (?P<path>
        /?(?:\.{1,2}/)?(?:[\w.@+-]+/)*
        (?:[\w@+-][\w.@+-]*\.[A-Za-z][\w+-]*|"""
    + _EXTENSIONLESS
    + r""")
    )
    (?:
        :L?(?P<start>\d+)(?:[ ]?[-–][ ]?L?(?P<end>\d+))?   # path:12  path:12-20  path:L12-L20
      | \#L(?P<hash_start>\d+)(?:-L?(?P<hash_end>\d+))?    # path#L12  path#L12-L20
    )
    (?::\d+)?                            # a column: ignored
    (?P=tick)
    (?!\w)
    """,
    re.VERBOSE,
)
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_BULLET_ONLY = re.compile(r"^[ \t]*(?:[-*•+]|\d+[.)])?[ \t]*$")
_PAREN_WORDS = re.compile(r"(?i)^\s*(?:see|cf\.?|in|at|from|source:?|sources:?)?\s*$")


@dataclass(frozen=True)
class Citation:
    """A cited line range: ``path`` as written (``./`` dropped), 1-based inclusive lines, and where it is.

    ``span`` is the (start, end) character offsets of the citation in the text, backticks included.
    """

    path: str
    start: int
    end: int
    span: tuple[int, int] = (0, 0)

    @property
    def label(self) -> str:
        """``path:start-end``, or ``path:start`` for a single line."""
        if self.start == self.end:
            return f"{self.path}:{self.start}"
        return f"{self.path}:{self.start}-{self.end}"


@dataclass
class GroundingReport:
    valid: list[Citation] = field(default_factory=list)
    """Citations to lines that exist; a path given as a unique suffix of a known path is resolved to it."""
    invalid: list[tuple[Citation, str]] = field(default_factory=list)
    """Each invalid citation with the reason, e.g. "src/a.py has 40 lines"."""
    text_flagged: str = ""
    """The text with FLAG after every invalid citation."""
    text_stripped: str = ""
    """The text with every invalid citation removed, with its brackets and list separator."""

    @property
    def grounded(self) -> bool:
        """True when no citation is invalid (an answer without citations is grounded vacuously)."""
        return not self.invalid


def find_citations(text: str) -> list[Citation]:
    """The citations in `text` in order of appearance, skipping fenced code blocks."""
    citations = []
    fenced = _fenced_spans(text)
    for match in _CITATION.finditer(text):
        if any(start <= match.start() < end for start, end in fenced):
            continue
        start = int(match.group("start") or match.group("hash_start"))
        end_text = match.group("end") or match.group("hash_end")
        end = int(end_text) if end_text else start
        citations.append(Citation(_normalise(match.group("path")), start, end, match.span()))
    return citations


def check_citations(
    text: str, line_counts: Mapping[str, int], known_paths: Collection[str] | None = None
) -> GroundingReport:
    """Check each citation in `text` against the files' line counts.

    `line_counts` maps a workspace-relative path to its number of lines; `known_paths` are the
    files that exist (defaults to the keys of `line_counts`). A citation is invalid when its file
    is unknown, when it starts before line 1 or its range is reversed, or when it ends past the
    file's last line. A known file without a line count is taken on trust.
    """
    known = set(line_counts) | set(known_paths or ())
    report = GroundingReport()
    for citation in find_citations(text):
        path = _resolve(citation.path, known)
        if path is None:
            report.invalid.append((citation, f"{citation.path} is not a file in the workspace"))
        elif citation.start < 1:
            report.invalid.append((citation, "line numbers start at 1"))
        elif citation.end < citation.start:
            report.invalid.append((citation, f"the range {citation.start}-{citation.end} is reversed"))
        elif path in line_counts and citation.end > line_counts[path]:
            report.invalid.append((citation, f"{path} has {line_counts[path]} lines"))
        else:
            report.valid.append(replace(citation, path=path))
    bad = [citation for citation, _ in report.invalid]
    report.text_flagged = _flag(text, bad)
    report.text_stripped = _strip(text, bad)
    return report


def sources_line(citations: Iterable[Citation | str]) -> str:
    """A "Sources: a.py:1-20, b.py:7" footer: duplicates dropped, overlapping ranges of a file merged.

    Files keep the order they are first cited in. Strings that are not ``path:start[-end]`` are kept
    as they are. Returns "" when there is nothing to list.
    """
    ranges: dict[str, list[list[int]]] = {}
    other: list[str] = []
    for item in citations:
        if isinstance(item, str):
            found = find_citations(item.strip())
            if len(found) != 1:
                if item.strip() and item.strip() not in other:
                    other.append(item.strip())
                continue
            item = found[0]
        ranges.setdefault(item.path, []).append(sorted((item.start, item.end)))
    labels: list[str] = []
    for path, spans in ranges.items():
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        labels.extend(Citation(path, start, end).label for start, end in merged)
    labels.extend(other)
    return f"Sources: {', '.join(labels)}" if labels else ""


# ---------------------------------------------------------------------------------------------- helpers


def _normalise(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path


def _resolve(path: str, known: set[str]) -> str | None:
    """The known path cited: itself, or the one known path it is a suffix of (``retrieval.py``)."""
    if path in known:
        return path
    tail = "/" + path.lstrip("/")
    matches = [candidate for candidate in known if ("/" + candidate).endswith(tail)]
    return matches[0] if len(matches) == 1 else None


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of fenced code blocks (an unclosed fence runs to the end)."""
    spans: list[tuple[int, int]] = []
    fence: str | None = None
    opened = 0
    offset = 0
    for line in text.splitlines(keepends=True):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence, opened = marker, offset
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not line.strip()[len(marker) :]:
                spans.append((opened, offset + len(line)))
                fence = None
        offset += len(line)
    if fence is not None:
        spans.append((opened, len(text)))
    return spans


def _flag(text: str, citations: list[Citation]) -> str:
    for citation in sorted(citations, key=lambda c: c.span[0], reverse=True):
        end = citation.span[1]
        text = f"{text[:end]} {FLAG}{text[end:]}"
    return text


def _strip(text: str, citations: list[Citation]) -> str:
    for citation in sorted(citations, key=lambda c: c.span[0], reverse=True):
        text = _remove(text, *citation.span)
    return text


def _remove(text: str, start: int, end: int) -> str:
    """`text` without [start, end), taking the brackets, separator and bullet that only served it."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end == -1 else line_end
    # "(see a.py:9)" / "[a.py:9]": the brackets go too when they hold nothing else
    for opener, closer in (("(", ")"), ("[", "]")):
        left = text.rfind(opener, line_start, start)
        right = text.find(closer, end, line_end)
        if (
            left != -1
            and right != -1
            and _PAREN_WORDS.match(text[left + 1 : start])
            and not text[end:right].strip()
        ):
            start, end = left, right + 1
            break
    before, after = text[:start], text[end:]
    # a list of citations: drop the separator on one side
    separator = re.match(r"[ \t]*[,;][ \t]*", after)
    if separator and (before.rstrip(" \t").endswith((":", ",", ";", "(", "\n")) or not before.strip()):
        after = after[separator.end() :]
    else:
        tail = re.search(r"[ \t]*(?:,|;|\band\b)[ \t]*$", before)
        if tail:
            before = before[: tail.start()]
    if before.endswith((" ", "\t")) and (not after or after[0] in " \t\n.,;:!?)]"):
        before = before.rstrip(" \t")
    joined = before + after
    # a bullet or line that held only the citation disappears with it (the line held it, so it was not blank)
    line_start = before.rfind("\n") + 1
    line_end = joined.find("\n", len(before))
    line_end = len(joined) if line_end == -1 else line_end
    if _BULLET_ONLY.match(joined[line_start:line_end]):
        drop_end = line_end + 1 if line_end < len(joined) else line_end
        if drop_end == line_end and line_start > 0:  # last line: take the newline before it instead
            line_start -= 1
        joined = joined[:line_start] + joined[drop_end:]
    return joined
