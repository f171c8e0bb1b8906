"""A file's outline: the file collapsed to signatures, docstrings and top comments, bodies elided.

Code keeps its definitions' headers and the first line of other statements; Markdown keeps its headings,
config files their section and key lines, any other text its first lines.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

from tree_sitter import Node

from swarm_lsp.code.definitions import CONTAINER_KINDS, FUNCTION_KINDS, ParsedCode
from swarm_lsp.code.parsing import SourceText, last_row
from swarm_lsp.code.sections import Section

__all__ = ["Piece", "code_outline", "collapse", "text_outline"]

Piece = tuple[int, int, str]
"""(first_row, last_row, text): one source row, or a hidden span shown as one ``...`` line."""

_CONFIG_HEADER = re.compile(r"^(?:\[[^\]\n]+\]\s*$|[A-Za-z_][\w.-]*\s*[:=](?:\s|$))")
_CONFIG_SUFFIXES = (".toml", ".ini", ".cfg", ".conf", ".yaml", ".yml", ".properties", ".env")
_MAX_OUTLINE_LINES = 200
_MAX_OUTLINE_LINE = 300


def code_outline(code: ParsedCode) -> str:
    hidden: list[tuple[int, int]] = []
    for definition in code.definitions:
        if definition.kind in FUNCTION_KINDS and definition.elided_rows is not None:
            hidden.append(definition.elided_rows)
    outer_ranges = {(d.outer.start_byte, d.outer.end_byte) for d in code.definitions}
    starts = sorted(d.start_row for d in code.definitions)
    spec = code.spec
    keep_whole = spec.comment_types | spec.import_types | spec.attached_types

    def trim(nodes: Iterable[Node]) -> None:
        """Statements outside definitions keep their first line."""
        for node in nodes:
            first, last = node.start_point.row, last_row(node)
            if last <= first or node.type in keep_whole:
                continue
            if (node.start_byte, node.end_byte) in outer_ranges:
                continue
            if (
                spec.python_docstrings
                and node.type == "expression_statement"
                and node.named_child_count
                and node.named_children[0].type == "string"
            ):
                continue  # a docstring
            if bisect.bisect_right(starts, last) > bisect.bisect_left(starts, first):
                continue  # holds definitions (`if TYPE_CHECKING:`, a namespace, ...)
            hidden.append((first + 1, last))

    trim(code.root.named_children)
    for definition in code.definitions:
        if definition.kind in CONTAINER_KINDS and definition.body is not None:
            trim(definition.body.named_children)
    pieces = collapse(code.source, 0, code.source.row_count - 1, hidden)
    return _join_outline(piece[2] for piece in pieces)


def text_outline(path: str, source: SourceText, sections: list[Section]) -> str:
    lines = source.lines
    selected: list[str] = []
    if sections:
        selected = [lines[section.start].strip() for section in sections]
    elif path.lower().endswith(_CONFIG_SUFFIXES):
        selected = [line for line in lines if _CONFIG_HEADER.match(line)]
    if not selected:
        selected = [line for line in lines[:50] if line.strip()][:10]
    return _join_outline(selected[:_MAX_OUTLINE_LINES])


def collapse(source: SourceText, first: int, last: int, hidden: list[tuple[int, int]]) -> list[Piece]:
    """Rows ``first..last`` as pieces, each hidden span (merged with those it touches) one ``...`` piece."""
    spans = sorted((max(a, first), min(b, last)) for a, b in hidden if a <= b)
    merged: list[list[int]] = []
    for a, b in spans:
        if a > b:
            continue
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    pieces: list[Piece] = []
    row = first
    for a, b in merged:
        pieces.extend((r, r, source.lines[r]) for r in range(row, a))
        marker_row = next((r for r in range(a, b + 1) if not source.blank(r)), a)
        pieces.append((a, b, f"{source.indent(marker_row)}..."))
        row = b + 1
    pieces.extend((r, r, source.lines[r]) for r in range(row, last + 1))
    return pieces


def _join_outline(lines: Iterable[str]) -> str:
    """Trailing spaces dropped, runs of blank lines squeezed to one, very long lines cut."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if len(line) > _MAX_OUTLINE_LINE:
            line = line[: _MAX_OUTLINE_LINE - 3] + "..."
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)
