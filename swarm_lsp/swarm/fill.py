"""Inline completion text: the fill-in-the-middle prompt, and the suggestion cut to what belongs.

`fill_prompt` lays out repository snippets, the text before the cursor and (for a model with FIM
markers) the text after it. Everything that changes while the user types sits at the end of the
before-text, so consecutive keystrokes share all of the prompt up to the cursor and the backend
re-reads only the new characters (and the short after-text, for FIM).

`trim_suggestion` keeps what a person would accept: it stops at the end of the block (a line
indented less than the cursor's, a bracket closed that was not opened), at a blank line, and
never repeats the text that already follows the cursor.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

COMMENT_PREFIX = {
    "python": "#", "ruby": "#", "bash": "#", "shell": "#", "toml": "#", "yaml": "#", "r": "#",
    "javascript": "//", "typescript": "//", "tsx": "//", "go": "//", "rust": "//", "java": "//",
    "c": "//", "cpp": "//", "csharp": "//", "kotlin": "//", "swift": "//", "scala": "//", "php": "//",
    "lua": "--", "sql": "--", "haskell": "--",
}  # fmt: skip
"""How to write a comment line, per language id; context is shown as comments where known."""
OPENERS, CLOSERS = "([{", ")]}"


@dataclass(frozen=True)
class FillRequest:
    path: str
    language: str
    before: str
    """The text before the cursor (from a stable line above it: see the completer)."""
    after: str
    """The text after the cursor (a few lines)."""
    snippets: Sequence[str] = ()
    """Repository context: definitions the code near the cursor uses, each a few lines."""

    @property
    def current_line(self) -> str:
        """The cursor's line up to the cursor."""
        return self.before.rsplit("\n", 1)[-1]

    @property
    def rest_of_line(self) -> str:
        return self.after.split("\n", 1)[0]

    @property
    def multiline(self) -> bool:
        """Whether a suggestion may span lines: at an empty line, or after a line that opens a block."""
        if self.rest_of_line.strip():
            return False
        line = self.current_line.rstrip()
        return not line.strip() or line.endswith((":", "{", "=>"))


def fill_prompt(request: FillRequest, markers: tuple[str, str, str] | None) -> str:
    """The raw prompt: `pre context+before suf after mid` with FIM markers, else context+before."""
    header = _context_header(request)
    if markers is not None:
        pre, suf, mid = markers
        return f"{pre}{header}{request.before}{suf}{request.after}{mid}"
    return header + request.before


def _context_header(request: FillRequest) -> str:
    comment = COMMENT_PREFIX.get(request.language)
    if comment is None or not request.snippets:
        return ""
    lines = [f"{comment} Related code in this repository:"]
    for snippet in request.snippets:
        lines.extend(f"{comment} {line}".rstrip() for line in snippet.splitlines())
    lines.append(f"{comment} File: {request.path}")
    return "\n".join(lines) + "\n"


def trim_suggestion(text: str, request: FillRequest, *, cut_short: bool = False) -> str:
    """`text` cut to one line (or one block, when multi-line fits here), without repeating what
    follows the cursor; "" when nothing useful is left. `cut_short`: the model ran out of tokens,
    so a last line of several is unfinished and is dropped."""
    current = request.current_line
    if not current.strip() and text.startswith("\n"):
        # On a blank line the model may start with a line break: the cursor is already on a new
        # line, at its indentation.
        text = text.lstrip("\n")
        text = text[len(current) :] if text.startswith(current) else text.lstrip(" \t")
    if cut_short and "\n" in text:
        text = text.rsplit("\n", 1)[0]
    if not request.multiline:
        text = text.split("\n", 1)[0]
    text = _until_block_ends(text, request.current_line)
    text = _without_what_follows(text, request.after)
    return text.rstrip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _until_block_ends(text: str, current_line: str) -> str:
    """Cut at a blank line, a line indented less than the cursor's block, or an unopened closer."""
    base = _indent(current_line) if current_line.strip() else len(current_line)
    depth = sum(current_line.count(c) for c in OPENERS) - sum(current_line.count(c) for c in CLOSERS)
    depth = max(depth, 0)
    kept: list[str] = []
    for number, line in enumerate(text.split("\n")):
        if number > 0:
            if not line.strip():
                break
            if _indent(line) < base:
                break
        cut = None
        for position, char in enumerate(line):
            if char in OPENERS:
                depth += 1
            elif char in CLOSERS:
                depth -= 1
                if depth < 0:
                    cut = position
                    break
        if cut is not None:
            kept.append(line[:cut])
            break
        kept.append(line)
    return "\n".join(kept)


def _without_what_follows(text: str, after: str) -> str:
    """Drop the part of `text` that the document already has after the cursor."""
    rest = after.split("\n", 1)[0].strip()
    if rest:
        first = text.split("\n", 1)[0]
        at = first.find(rest)
        if at >= 0:
            return first[:at]
        return text
    following = next((line.strip() for line in after.split("\n")[1:] if line.strip()), "")
    if not following:
        return text
    lines = text.split("\n")
    for number, line in enumerate(lines):
        if number > 0 and line.strip() == following:
            return "\n".join(lines[:number])
    return text


def choose(suggestions: Sequence[str]) -> str:
    """The suggestion most voters wrote (after trimming); a tie goes to the first (greedy) voter."""
    useful = [text for text in suggestions if text.strip()]
    if not useful:
        return ""
    counts = Counter(_normal(text) for text in useful)
    best = max(counts.values())
    return next(text for text in useful if counts[_normal(text)] == best)


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())
