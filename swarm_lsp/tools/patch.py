"""Unified diffs: parse one (git or plain `diff -u`), apply it to text exactly or refuse.

A hunk applies where its context and removed lines match the file exactly (line endings aside),
at the line it names or, if the file has moved, at the nearest place it matches. Nothing fuzzy:
a hunk that matches nowhere is an error naming the hunk and the line it expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEV_NULL = "/dev/null"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    pass


@dataclass
class Hunk:
    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: list[tuple[str, str]] = field(default_factory=list)
    """(op, text) with op one of ' ', '-', '+'; text without its line ending."""
    old_ends_without_newline: bool = False
    new_ends_without_newline: bool = False

    @property
    def old_lines(self) -> list[str]:
        return [text for op, text in self.lines if op in " -"]

    @property
    def new_lines(self) -> list[str]:
        return [text for op, text in self.lines if op in " +"]


@dataclass
class FilePatch:
    old_path: str | None
    """None when the patch creates the file."""
    new_path: str | None
    """None when the patch deletes the file."""
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""

    @property
    def creates(self) -> bool:
        return self.old_path is None

    @property
    def deletes(self) -> bool:
        return self.new_path is None

    @property
    def added(self) -> int:
        return sum(1 for hunk in self.hunks for op, _ in hunk.lines if op == "+")

    @property
    def removed(self) -> int:
        return sum(1 for hunk in self.hunks for op, _ in hunk.lines if op == "-")


def parse_patch(text: str) -> list[FilePatch]:
    lines = text.splitlines()
    patches: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            raise PatchError(
                "renames and copies are not supported; delete the old file and create the new one"
            )
        if line.startswith("GIT binary patch") or line.startswith("Binary files "):
            raise PatchError("binary patches are not supported")
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old_path, new_path = _header_path(line[4:]), _header_path(lines[i + 1][4:])
            # git's a/ and b/ prefixes are dropped only when both sides have them (plain diff -u has none).
            if (old_path is None or old_path.startswith("a/")) and (
                new_path is None or new_path.startswith("b/")
            ):
                old_path = old_path[2:] if old_path else None
                new_path = new_path[2:] if new_path else None
            if old_path is None and new_path is None:
                raise PatchError(f"line {i + 1}: both sides of the file header are {DEV_NULL}")
            patch = FilePatch(old_path, new_path)
            i += 2
            while i < len(lines) and lines[i].startswith("@@"):
                hunk, i = _parse_hunk(lines, i)
                patch.hunks.append(hunk)
            if not patch.hunks:
                raise PatchError(f"the patch for {patch.path} has no hunks (@@ -a,b +c,d @@ lines)")
            patches.append(patch)
            continue
        i += 1
    if not patches:
        raise PatchError("no file changes found: expected a unified diff with ---/+++ headers and @@ hunks")
    return patches


def _header_path(raw: str) -> str | None:
    path = raw.split("\t", 1)[0].strip()
    if path.startswith('"') and path.endswith('"') and len(path) >= 2:
        path = path[1:-1]
    if path == DEV_NULL:
        return None
    if not path or path in ("a/", "b/"):
        raise PatchError(f"a file header has no path: {raw!r}")
    return path


def _parse_hunk(lines: list[str], i: int) -> tuple[Hunk, int]:
    match = _HUNK.match(lines[i])
    if match is None:
        raise PatchError(f"line {i + 1}: not a hunk header: {lines[i]!r}")
    old_start, old_count, new_start, new_count = (
        int(match.group(1)),
        int(match.group(2) or 1),
        int(match.group(3)),
        int(match.group(4) or 1),
    )
    hunk = Hunk(old_start, old_count, new_start, new_count)
    i += 1
    seen_old = seen_new = 0
    while i < len(lines) and (seen_old < old_count or seen_new < new_count or lines[i].startswith("\\")):
        line = lines[i]
        if line.startswith("\\"):  # "\ No newline at end of file" refers to the line before it
            if hunk.lines and hunk.lines[-1][0] in " -":
                hunk.old_ends_without_newline = True
            if hunk.lines and hunk.lines[-1][0] in " +":
                hunk.new_ends_without_newline = True
            i += 1
            continue
        op, text = (line[0], line[1:]) if line else (" ", "")
        if op not in " -+":
            raise PatchError(f"line {i + 1}: a hunk line must start with ' ', '-' or '+': {line!r}")
        hunk.lines.append((op, text))
        seen_old += op in " -"
        seen_new += op in " +"
        i += 1
    if seen_old != old_count or seen_new != new_count:
        raise PatchError(
            f"hunk @@ -{old_start},{old_count} +{new_start},{new_count} @@ has {seen_old} old and "
            f"{seen_new} new lines; the counts in its header must match its lines"
        )
    return hunk, i


def apply_file_patch(original: str | None, patch: FilePatch) -> str | None:
    """The file's new text (None when the patch deletes it); PatchError when a hunk does not match."""
    if patch.creates:
        if original is not None:
            raise PatchError(f"the patch creates {patch.path}, but it exists")
        original = ""
    elif original is None:
        raise PatchError(f"the patch changes {patch.path}, which does not exist")
    newline = "\r\n" if "\r\n" in original else "\n"
    lines = original.splitlines()
    ends_with_newline = original.endswith(("\n", "\r")) or not original
    offset = 0
    for number, hunk in enumerate(patch.hunks, 1):
        old = hunk.old_lines
        expected = max(hunk.old_start - 1, 0) + offset
        at = _find(lines, old, expected)
        if at is None:
            raise PatchError(
                f"hunk {number} of {patch.path} (@@ -{hunk.old_start},{hunk.old_count} @@) does not match "
                f"the file near line {hunk.old_start}; read the file again and make the patch from its "
                "current text"
            )
        reaches_end = at + len(old) == len(lines)
        lines[at : at + len(old)] = hunk.new_lines
        offset += len(hunk.new_lines) - len(old)
        if reaches_end:  # the hunk says whether the file's last line ends with a newline
            ends_with_newline = not hunk.new_ends_without_newline
    if patch.deletes:
        if lines:
            raise PatchError(f"the patch deletes {patch.path} but leaves lines in it")
        return None
    text = newline.join(lines)
    return text + newline if lines and ends_with_newline else text


def _find(lines: list[str], block: list[str], expected: int) -> int | None:
    if not block:
        return min(max(expected, 0), len(lines))
    limit = len(lines) - len(block)
    for distance in range(0, max(limit, 0) + 1 + abs(expected)):
        for at in (expected - distance, expected + distance) if distance else (expected,):
            if 0 <= at <= limit and lines[at : at + len(block)] == block:
                return at
        if expected - distance < 0 and expected + distance > limit:
            break
    return None
