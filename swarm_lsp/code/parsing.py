"""A file's text by rows, and syntax nodes seen as row ranges, for code that must not touch tree_sitter.

Rows are 0-based here (tree-sitter's); records turn them into 1-based lines.
"""

from __future__ import annotations

import itertools

from tree_sitter import Node


class SourceText:
    """The file's text by lines, with prefix sums of line lengths for O(1) range sizes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.split("\n")
        self.data = text.encode("utf-8", "replace")
        # offsets[i] = characters before row i, counting one newline per row.
        self.offsets = [0, *itertools.accumulate(len(line) + 1 for line in self.lines)]

    @property
    def row_count(self) -> int:
        return len(self.lines)

    def size(self, first: int, last: int) -> int:
        """Characters in rows ``first..last`` joined by newlines."""
        return self.offsets[last + 1] - self.offsets[first] - 1

    def rows(self, first: int, last: int) -> str:
        return "\n".join(self.lines[first : last + 1])

    def blank(self, row: int) -> bool:
        return not self.lines[row].strip()

    def slice(self, start_byte: int, end_byte: int) -> str:
        return self.data[start_byte:end_byte].decode("utf-8", "replace")

    def indent(self, row: int) -> str:
        line = self.lines[row]
        return line[: len(line) - len(line.lstrip())]

    def windows(self, first: int, last: int, budget: int) -> list[tuple[int, int]]:
        """Rows ``first..last`` cut into line windows of at most ``budget`` characters (one row at least)."""
        windows: list[tuple[int, int]] = []
        start = first
        for row in range(first, last + 1):
            if row > start and self.size(start, row) > budget:
                windows.append((start, row - 1))
                start = row
        windows.append((start, last))
        return windows


def last_row(node: Node) -> int:
    """The last row holding part of ``node`` (a node ending at column 0 ends on the row before)."""
    end_row, end_column = node.end_point
    if end_column == 0 and end_row > node.start_point.row:
        return end_row - 1
    return end_row


class Statement:
    """A syntax node as a range of rows: a statement, or a part of one when a statement must be split.

    Comments (tree-sitter's extras) are never statements, so they stay with the code after them.
    """

    __slots__ = ("_node", "first_row", "last_row")

    def __init__(self, node: Node) -> None:
        self._node = node
        self.first_row = node.start_point.row
        self.last_row = last_row(node)

    def parts(self) -> list[Statement]:
        return statements(self._node.named_children)


def statements(nodes: list[Node]) -> list[Statement]:
    return [Statement(node) for node in nodes if not node.is_extra]
