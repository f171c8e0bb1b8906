"""Mechanical renames, and edits applied together in memory.

`parse_rename("rename fetch_user to load_user")` reads a rename instruction (also "rename the function
`a` to `b`", "rename Request.get to fetch"); `rename_edits(radius, new_name)` turns the certain sites
of a blast radius into one edit each, with no model call. `changed_texts` applies any set of edits
to the files' current texts, checking they do not overlap, so the whole change can be checked.
"""

from __future__ import annotations

import itertools
import keyword
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from swarm_lsp.blast_radius import BlastRadius
from swarm_lsp.swarm.tasks import Edit, TextRange, apply_edit

_NAME = r"[`'\"]?(?P<{group}>[A-Za-z_][\w.]*?)(?:\(\))?[`'\"]?"
_RENAME = re.compile(
    r"^\s*(?:rename|change\s+the\s+name\s+of)\s+(?:the\s+)?"
    r"(?:function|class|method|constant|variable|type|symbol)?\s*"
    + _NAME.format(group="old")
    + r"\s*(?:to|as|into|->|→)\s*"
    + _NAME.format(group="new")
    + r"\s*\.?\s*$",
    re.IGNORECASE,
)


class RenameError(ValueError):
    """A rename that cannot be made as asked (an invalid new name, nothing to rename)."""


@dataclass(frozen=True)
class Rename:
    old: str
    """The name as written in code (the last part of `Class.method`)."""
    new: str
    qualified: str


def parse_rename(instruction: str) -> Rename | None:
    match = _RENAME.match(instruction)
    if match is None:
        return None
    qualified, new = match.group("old"), match.group("new")
    old = qualified.rsplit(".", 1)[-1]
    if not new.isidentifier():
        raise RenameError(f"{new!r} is not a valid name")
    if keyword.iskeyword(new):
        raise RenameError(f"{new!r} is a Python keyword; choose another name")
    if old == new:
        raise RenameError(f"{old} already has that name")
    return Rename(old, new, qualified)


def rename_edits(radius: BlastRadius, rename: Rename) -> list[Edit]:
    """One edit per certain site: the identifier replaced by the new name."""
    return [
        Edit(site.path, TextRange(site.line, site.line, site.start_col, site.end_col), rename.new, rename.old)
        for site in radius.certain
    ]


def changed_texts(edits: Iterable[Edit], file_text: Callable[[str], str | None]) -> dict[str, str]:
    """Every touched file's text with all its edits applied (ValueError if edits overlap or are stale)."""
    by_path: dict[str, list[Edit]] = {}
    for edit in edits:
        by_path.setdefault(edit.path, []).append(edit)
    texts: dict[str, str] = {}
    for path, file_edits in by_path.items():
        text = file_text(path)
        if text is None:
            raise ValueError(f"{path} can no longer be read")
        ordered = sorted(file_edits, key=_position, reverse=True)
        for later, earlier in itertools.pairwise(ordered):
            if _position(earlier, end=True) > _position(later):
                raise ValueError(f"two edits overlap in {path} near line {later.range.start_line}")
        for edit in ordered:
            text = apply_edit(text, edit)
        texts[path] = text
    return texts


def _position(edit: Edit, *, end: bool = False) -> tuple[int, int]:
    if end:
        return edit.range.end_line, edit.range.end_col if edit.range.end_col is not None else 1 << 30
    return edit.range.start_line, edit.range.start_col or 0
