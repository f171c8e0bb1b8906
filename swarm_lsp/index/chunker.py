"""Parse one file into its record, symbols, references and definition-aligned chunks.

Code files go through tree-sitter (``languages.grammar``); everything else, and any language whose grammar
wheel does not load, goes through the text chunker (Markdown by headings, other text by paragraphs).

Chunking rules, for a budget of ``chunk_tokens`` (see ``estimate_tokens``):

- a definition (function, class, struct, impl, ...) that fits the budget is one chunk of its kind,
  together with the comments and attributes directly above it;
- a larger container (class, impl, namespace, ...) becomes its collapsed form, the chunk kind ``"class"``
  (member bodies replaced by ``...`` lines), plus the chunks of each member, recursively;
- a larger function, or a large container without members, is split into ``"block"`` chunks at statement
  boundaries; blocks after the first start with the signature and a ``...`` line so they stay searchable,
  but their lines are the block's own;
- the code between top-level definitions (imports, constants, the module docstring) becomes ``"module"``
  chunks, split at top-level statement boundaries.

Every non-blank line of a file lies in some chunk. Lines are 1-based and inclusive.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tree_sitter import Node, QueryCursor

from swarm_lsp.code.languages import MARKDOWN, Grammar, detect_language, grammar
from swarm_lsp.code.tokens import CHARS_PER_TOKEN
from swarm_lsp.index.records import Chunk, FileRecord, ParsedFile, Reference, Symbol

__all__ = ["parse_file"]

FUNCTION_KINDS = frozenset({"function", "method"})
CONTAINER_KINDS = frozenset(
    {"class", "interface", "struct", "enum", "trait", "impl", "namespace", "module", "union", "record"}
)
_CLASS_LIKE = CONTAINER_KINDS - {"namespace", "module"}
# Variables scope the functions written in them (`const api = { get() {} }` -> api.get).
_SCOPE_KINDS = FUNCTION_KINDS | CONTAINER_KINDS | {"variable", "constant"}
_REFERENCE_KIND_RANK = {"reference": 0, "type": 1, "call": 2, "import": 3}
_HIDDEN_KINDS = frozenset({"impl"})  # a scope for its members' names, not a symbol of its own
_CLOSERS = ("}", ")", "]", "end")
_MAX_SIGNATURE_LINES = 8


# ---------------------------------------------------------------------------------------------- source


class _Source:
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


def _last_row(node: Node) -> int:
    """The last row holding part of ``node`` (a node ending at column 0 ends on the row before)."""
    end_row, end_column = node.end_point
    if end_column == 0 and end_row > node.start_point.row:
        return end_row - 1
    return end_row


# ---------------------------------------------------------------------------------------------- definitions


@dataclass(eq=False)
class _Definition:
    node: Node
    outer: Node  # the node with its wrappers (decorators, export, template<>)
    name: str
    kind: str
    scope: str  # a qualifier written in the definition itself: a Go receiver, C++ `Widget::`
    body: Node | None
    pattern: int
    name_start: int  # byte offset of the name node
    start_row: int = 0
    end_row: int = 0
    chunk_start_row: int = 0  # start_row moved up over attached comments and attributes
    parent: _Definition | None = None
    children: list[_Definition] = field(default_factory=list)
    qualified_name: str = ""
    parent_name: str | None = None
    docstring: str = ""
    docstring_end_row: int = -1  # Python: the last row of the docstring statement
    signature: str = ""

    @property
    def chunkable(self) -> bool:
        """Whether it gets chunks of its own; declarations without a body stay in their surroundings."""
        if self.kind in FUNCTION_KINDS:
            return self.body is not None
        return self.kind in CONTAINER_KINDS


_STRING_LITERAL = re.compile(r"^[rRuUbBfF]{0,2}(\"\"\"|'''|\"|')(.*)\1$", re.DOTALL)
_COMMENT_START = re.compile(r"^\s*(?:///?!?|/\*+!?|#+!?|\*+(?!/)|--)\s?")
_COMMENT_END = re.compile(r"\s*\*+/\s*$")
_TEMPLATE_ARGS = re.compile(r"<[^<>]*>")


def _clean_comment(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        line = _COMMENT_END.sub("", line)
        line = _COMMENT_START.sub("", line, count=1)
        lines.append(line.rstrip())
    return inspect.cleandoc("\n".join(lines))


def _clean_python_string(text: str) -> str:
    match = _STRING_LITERAL.match(text.strip())
    return inspect.cleandoc(match.group(2) if match else text)


def _split_scoped_name(name: str) -> tuple[str, str]:
    """``a::Widget<T>::compute`` -> (``a.Widget``, ``compute``)."""
    parts = [part for part in name.split("::") if part]
    if len(parts) < 2:
        return "", name.lstrip(":")
    scope = ".".join(parts[:-1])
    while "<" in scope:
        reduced = _TEMPLATE_ARGS.sub("", scope)
        if reduced == scope:
            break
        scope = reduced
    return scope, parts[-1]


class _CodeFile:
    """One parsed code file: definitions, symbols, references, chunks, outline."""

    def __init__(self, path: str, language: str, source: _Source, grammar: Grammar, budget: int) -> None:
        self.path = path
        self.language = language
        self.source = source
        self.grammar = grammar
        self.spec = grammar.spec
        self.budget = budget  # characters
        self.tree = grammar.parser().parse(source.data)
        self.root = self.tree.root_node
        self.definitions = self._find_definitions()
        self.chunks: list[Chunk] = []
        self._top_nodes: list[Node] | None = None  # the root's children, listed on first need
        self._top_last_rows: list[int] = []

    # -- definitions ---------------------------------------------------------------------------------

    def _find_definitions(self) -> list[_Definition]:
        spec = self.spec
        found: dict[tuple[int, int, str], _Definition] = {}
        for pattern, captures in QueryCursor(self.grammar.definitions).matches(self.root):
            kind_capture = next((key for key in captures if key.startswith("definition.")), None)
            names = captures.get("name")
            if kind_capture is None or not names:
                continue
            node = captures[kind_capture][0]
            name = self.source.slice(names[0].start_byte, names[0].end_byte).strip().strip("\"'`")
            if not name:
                continue
            key = (node.start_byte, node.end_byte, name)
            previous = found.get(key)
            if previous is not None and previous.pattern <= pattern:
                continue
            scope = ""
            if "::" in name:
                scope, name = _split_scoped_name(name)
            scopes = captures.get("scope")
            if scopes:
                scope = self.source.slice(scopes[0].start_byte, scopes[0].end_byte)
            bodies = captures.get("body")
            body = bodies[0] if bodies else node.child_by_field_name("body")
            outer = node
            while (parent := outer.parent) is not None and (
                parent.type in spec.wrappers
                or (parent.type in spec.group_wrappers and parent.named_child_count == 1)
            ):
                outer = parent
            kind = kind_capture.removeprefix("definition.")
            found[key] = _Definition(node, outer, name, kind, scope, body, pattern, names[0].start_byte)

        definitions = sorted(found.values(), key=lambda d: (d.outer.start_byte, -d.outer.end_byte))
        self._nest(definitions)
        for definition in definitions:
            self._describe(definition)
        return definitions

    def _nest(self, definitions: list[_Definition]) -> None:
        """Parents by containment (functions, containers and variables scope names), then qualified names."""
        stack: list[_Definition] = []
        for definition in definitions:
            start, end = definition.outer.start_byte, definition.outer.end_byte
            while stack:
                top = stack[-1]
                top_start, top_end = top.outer.start_byte, top.outer.end_byte
                if top_start <= start and end <= top_end and (top_start, top_end) != (start, end):
                    break
                stack.pop()
            parent = stack[-1] if stack else None
            definition.parent = parent
            if parent is not None:
                parent.children.append(definition)
            if definition.kind == "function" and (
                (parent is not None and parent.kind in _CLASS_LIKE) or definition.scope
            ):
                definition.kind = "method"
            prefix = [parent.qualified_name] if parent is not None else []
            if definition.scope:
                prefix.append(definition.scope)
            definition.parent_name = ".".join(prefix) or None
            definition.qualified_name = ".".join([*prefix, definition.name])
            if definition.kind in _SCOPE_KINDS:
                stack.append(definition)

    def _describe(self, definition: _Definition) -> None:
        """Rows, attached comments, docstring and signature."""
        source = self.source
        outer = definition.outer
        definition.start_row = outer.start_point.row
        definition.end_row = max(_last_row(outer), definition.start_row)

        attached = self.spec.comment_types | self.spec.attached_types
        comments: list[Node] = []
        first_row = definition.start_row
        sibling = outer.prev_named_sibling
        while sibling is not None and sibling.type in attached and _last_row(sibling) >= first_row - 1:
            before = sibling.prev_sibling
            if before is not None and _last_row(before) == sibling.start_point.row:
                break  # a trailing comment of the code before it
            if sibling.type in self.spec.comment_types:
                comments.append(sibling)
            first_row = sibling.start_point.row
            sibling = sibling.prev_named_sibling
        definition.chunk_start_row = first_row

        body = definition.body
        if self.spec.python_docstrings and body is not None and body.named_child_count:
            first = body.named_children[0]
            if first.type == "expression_statement" and first.named_child_count:
                string = first.named_children[0]
                if string.type == "string":
                    definition.docstring = _clean_python_string(
                        source.slice(string.start_byte, string.end_byte)
                    )
                    definition.docstring_end_row = _last_row(first)
        if not definition.docstring and comments:
            definition.docstring = _clean_comment(
                "\n".join(source.slice(c.start_byte, c.end_byte) for c in reversed(comments))
            )
        definition.signature = self._signature(definition)

    def _signature(self, definition: _Definition) -> str:
        source, node, body = self.source, definition.node, definition.body
        start = node.start_byte if self.spec.python_docstrings else definition.outer.start_byte
        if body is not None and body.start_byte > start:
            # up to the token before the body (`:`, `)`, `=>`), leaving out comments before the body
            before = body.prev_sibling
            while before is not None and before.is_extra:
                before = before.prev_sibling
            end = before.end_byte if before is not None and before.end_byte > start else body.start_byte
            text = source.slice(start, end).rstrip()
        else:
            line_end = source.data.find(b"\n", start)
            end = node.end_byte if line_end < 0 else min(line_end, node.end_byte)
            text = source.slice(start, end).rstrip().removesuffix("{").rstrip()
        lines = text.split("\n")
        while len(lines) > 1 and lines[0].lstrip().startswith("@"):
            lines.pop(0)  # annotations and decorators are not the signature
        indent = source.indent(definition.start_row)
        lines = [lines[0].lstrip()] + [line.removeprefix(indent) for line in lines[1:]]
        if definition.name not in text:  # `typedef struct {` names the type after the body
            lines[-1] = f"{lines[-1]} {definition.name}"
        if len(lines) > _MAX_SIGNATURE_LINES:
            lines = [*lines[:_MAX_SIGNATURE_LINES], "..."]
        return "\n".join(line.rstrip() for line in lines)

    # -- symbols and references ------------------------------------------------------------------------

    def symbols(self) -> list[Symbol]:
        return [
            Symbol(
                path=self.path,
                name=d.name,
                qualified_name=d.qualified_name,
                kind=d.kind,
                parent=d.parent_name,
                start_line=d.start_row + 1,
                end_line=d.end_row + 1,
                signature=d.signature,
                docstring=d.docstring,
            )
            for d in self.definitions
            if d.kind not in _HIDDEN_KINDS
        ]

    def references(self) -> list[Reference]:
        source = self.source
        definition_names = {d.name_start for d in self.definitions}
        kinds: dict[tuple[str, int], str] = {}  # one reference per name and line, of its most telling kind
        for kind, nodes in QueryCursor(self.grammar.references).captures(self.root).items():
            if kind.startswith("_"):
                continue
            rank = _REFERENCE_KIND_RANK.get(kind, 0)
            for node in nodes:
                if kind != "import" and node.start_byte in definition_names:
                    continue
                name = source.slice(node.start_byte, node.end_byte).strip().strip("\"'<>`")
                if len(name) > 200 or not any(char.isalnum() for char in name):
                    continue
                key = (name, node.start_point.row + 1)
                previous = kinds.get(key)
                if previous is None or _REFERENCE_KIND_RANK.get(previous, 0) < rank:
                    kinds[key] = kind
        return [
            Reference(self.path, name, line, kind)
            for (name, line), kind in sorted(kinds.items(), key=lambda item: (item[0][1], item[0][0]))
        ]

    # -- chunks ----------------------------------------------------------------------------------------

    def build_chunks(self) -> list[Chunk]:
        top_level = [d for d in self.definitions if d.parent is None and d.chunkable]
        covered_until = -1  # rows up to here already belong to a definition chunk
        gap_start = 0
        for definition in top_level:
            if definition.chunk_start_row <= covered_until:
                # shares rows with the previous definition (two on one line): chunk it on its own anyway
                self._chunk_definition(definition)
                covered_until = max(covered_until, definition.end_row)
                gap_start = covered_until + 1
                continue
            self._chunk_module(gap_start, definition.chunk_start_row - 1)
            self._chunk_definition(definition)
            covered_until = definition.end_row
            gap_start = covered_until + 1
        self._chunk_module(gap_start, self.source.row_count - 1)
        self.chunks.sort(key=lambda c: (c.start_line, -c.end_line))
        return self.chunks

    def _chunk_definition(self, definition: _Definition) -> None:
        first, last = definition.chunk_start_row, definition.end_row
        symbol = definition.qualified_name
        if self.source.size(first, last) <= self.budget:
            self._emit(first, last, symbol, definition.kind)
            return
        members = [child for child in definition.children if child.chunkable]
        if definition.kind in CONTAINER_KINDS and members:
            self._chunk_collapsed(definition, members)
            for member in members:
                self._chunk_definition(member)
            return
        self._chunk_blocks(definition)

    def _chunk_collapsed(self, definition: _Definition, members: list[_Definition]) -> None:
        hidden = [span for member in members if (span := self._elision(member)) is not None]
        pieces = _collapse(self.source, definition.chunk_start_row, definition.end_row, hidden)
        header = f"{self.source.indent(definition.start_row)}{definition.signature}"
        if len(header) * 3 > self.budget:
            header = ""
        windows = _pack_pieces(pieces, self.budget - len(header) - 1)
        for index, window in enumerate(windows):
            size = sum(len(piece[2]) + 1 for piece in window)
            if index and header and size + len(header) <= self.budget:
                # later windows start with the class's signature, like blocks
                window = [(window[0][0], window[0][0], header), *window]
            self._emit_text(window[0][0], window[-1][1], definition.qualified_name, "class", window)

    def _chunk_blocks(self, definition: _Definition) -> None:
        source = self.source
        signature = definition.signature
        indent = source.indent(definition.start_row)
        prefix = f"{indent}{signature}\n{indent}    ...\n" if signature else ""
        if len(prefix) * 3 > self.budget:
            prefix = ""
        first, last = definition.chunk_start_row, definition.end_row
        spans = _split_rows(source, first, last, [definition.outer], self.budget - len(prefix), self.budget)
        header_row = definition.node.start_point.row
        for start, end in spans:
            self._emit(start, end, definition.qualified_name, "block", prefix if start > header_row else "")

    def _chunk_module(self, first: int, last: int) -> None:
        source = self.source
        while first <= last and source.blank(first):
            first += 1
        if first > last:
            return
        if source.size(first, last) <= self.budget:
            self._emit(first, last, None, "module")
            return
        nodes = self._top_level_nodes(first, last)
        for start, end in _split_rows(source, first, last, nodes, self.budget):
            self._emit(start, end, None, "module")

    def _top_level_nodes(self, first: int, last: int) -> list[Node]:
        if self._top_nodes is None:
            self._top_nodes = self.root.named_children
            self._top_last_rows = [_last_row(node) for node in self._top_nodes]
        low = bisect.bisect_left(self._top_last_rows, first)
        nodes = []
        for node in itertools.islice(self._top_nodes, low, None):
            if node.start_point.row > last:
                break
            nodes.append(node)
        return nodes

    def _emit(self, first: int, last: int, symbol: str | None, kind: str, prefix: str = "") -> None:
        source = self.source
        while first < last and source.blank(first):
            first += 1
        while last > first and source.blank(last):
            last -= 1
        if first == last and source.blank(first):
            return
        text = source.rows(first, last)
        if first == last and len(text) > self.budget:
            # one huge line (minified code): pieces of it, all on that line
            step = max(self.budget, 1)
            for offset in range(0, len(text), step):
                self.chunks.append(
                    Chunk(
                        self.path,
                        first + 1,
                        last + 1,
                        symbol,
                        kind,
                        self.language,
                        text[offset : offset + step],
                    )
                )
            return
        if len(prefix) + len(text) > self.budget:
            prefix = ""  # a leaf that alone fills the budget goes without the signature
        self.chunks.append(Chunk(self.path, first + 1, last + 1, symbol, kind, self.language, prefix + text))

    def _emit_text(
        self, first: int, last: int, symbol: str | None, kind: str, pieces: Sequence[tuple[int, int, str]]
    ) -> None:
        text = "\n".join(piece[2] for piece in pieces).strip("\n")
        if text.strip():
            self.chunks.append(Chunk(self.path, first + 1, last + 1, symbol, kind, self.language, text))

    # -- elision and outline ---------------------------------------------------------------------------

    def _elision(self, definition: _Definition) -> tuple[int, int] | None:
        """The rows of a definition's body to replace with ``...``, keeping header, docstring and closer."""
        body = definition.body
        if body is None:
            return None
        body_first, body_last = body.start_point.row, _last_row(body)
        if self.spec.python_docstrings:
            if body_first == definition.node.start_point.row:
                return None  # `def f(): return 1`
            first = max(body_first, definition.docstring_end_row + 1)
            return (first, body_last) if first <= body_last else None
        if body_last <= body_first:
            return None
        last = body_last - 1 if self.source.lines[body_last].strip().startswith(_CLOSERS) else body_last
        first = body_first + 1
        return (first, last) if first <= last else None

    def outline(self) -> str:
        hidden: list[tuple[int, int]] = []
        for definition in self.definitions:
            if definition.kind in FUNCTION_KINDS and (span := self._elision(definition)) is not None:
                hidden.append(span)
        outer_ranges = {(d.outer.start_byte, d.outer.end_byte) for d in self.definitions}
        starts = sorted(d.start_row for d in self.definitions)
        keep_whole = self.spec.comment_types | self.spec.import_types | self.spec.attached_types

        def trim(nodes: Iterable[Node]) -> None:
            """Statements outside definitions keep their first line."""
            for node in nodes:
                first, last = node.start_point.row, _last_row(node)
                if last <= first or node.type in keep_whole:
                    continue
                if (node.start_byte, node.end_byte) in outer_ranges:
                    continue
                if (
                    self.spec.python_docstrings
                    and node.type == "expression_statement"
                    and node.named_child_count
                    and node.named_children[0].type == "string"
                ):
                    continue  # a docstring
                if bisect.bisect_right(starts, last) > bisect.bisect_left(starts, first):
                    continue  # holds definitions (`if TYPE_CHECKING:`, a namespace, ...)
                hidden.append((first + 1, last))

        trim(self.root.named_children)
        for definition in self.definitions:
            if definition.kind in CONTAINER_KINDS and definition.body is not None:
                trim(definition.body.named_children)
        pieces = _collapse(self.source, 0, self.source.row_count - 1, hidden)
        return _join_outline(piece[2] for piece in pieces)


# ---------------------------------------------------------------------------------------------- splitting


def _collapse(
    source: _Source, first: int, last: int, hidden: list[tuple[int, int]]
) -> list[tuple[int, int, str]]:
    """Rows ``first..last`` as (first_row, last_row, text) pieces, each hidden span one ``...`` piece."""
    spans = sorted((max(a, first), min(b, last)) for a, b in hidden if a <= b)
    merged: list[list[int]] = []
    for a, b in spans:
        if a > b:
            continue
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    pieces: list[tuple[int, int, str]] = []
    row = first
    for a, b in merged:
        pieces.extend((r, r, source.lines[r]) for r in range(row, a))
        marker_row = next((r for r in range(a, b + 1) if not source.blank(r)), a)
        pieces.append((a, b, f"{source.indent(marker_row)}..."))
        row = b + 1
    pieces.extend((r, r, source.lines[r]) for r in range(row, last + 1))
    return pieces


def _pack_pieces(pieces: list[tuple[int, int, str]], budget: int) -> list[list[tuple[int, int, str]]]:
    windows: list[list[tuple[int, int, str]]] = []
    current: list[tuple[int, int, str]] = []
    size = -1
    for piece in pieces:
        piece_size = len(piece[2]) + 1
        if current and size + piece_size > budget:
            windows.append(current)
            current, size = [], -1
        current.append(piece)
        size += piece_size
    if current:
        windows.append(current)
    return windows


def _units(nodes: Iterable[Node], first: int, last: int) -> list[list]:
    """Row spans [start, end, nodes] of ``nodes`` clipped to ``first..last``, covering every row there.

    Nodes sharing a row merge into one span; the rows between spans join the span after them (the comments
    and blank lines before a statement belong with it), the rows after the last span join that span.
    Comments make no span of their own, so they stay with the code after them.
    """
    spans: list[list] = []
    for node in nodes:
        if node.is_extra:
            continue
        start = max(node.start_point.row, first)
        end = min(_last_row(node), last)
        if end < start:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
            spans[-1][2].append(node)
        else:
            spans.append([start, end, [node]])
    if not spans:
        return [[first, last, []]]
    spans[0][0] = first
    for previous, span in itertools.pairwise(spans):
        span[0] = previous[1] + 1
    spans[-1][1] = last
    return spans


def _split_rows(
    source: _Source, first: int, last: int, nodes: list[Node], budget: int, first_budget: int | None = None
) -> list[tuple[int, int]]:
    """Rows ``first..last`` cut into contiguous spans under ``budget`` characters, at node boundaries.

    A span over budget is replaced by the spans of its nodes' children, as deep as needed; a leaf still over
    budget is cut into line windows. The span starting at ``first`` may use ``first_budget`` instead (the
    first block of a function carries no signature prefix).
    """
    budget = max(budget, 1)
    first_budget = max(first_budget or budget, budget)

    def limit(start: int) -> int:
        return first_budget if start == first else budget

    flat: list[tuple[int, int]] = []
    pending = list(reversed(_units(nodes, first, last)))
    while pending:
        start, end, span_nodes = pending.pop()
        if source.size(start, end) <= limit(start) or start == end:
            flat.append((start, end))
            continue
        children = [child for node in span_nodes for child in node.named_children]
        if not children:
            flat.extend(_line_windows(source, start, end, limit(start)))
            continue
        pending.extend(reversed(_units(children, start, end)))

    spans: list[tuple[int, int]] = []
    current: list[int] | None = None
    for start, end in flat:
        if current is not None and source.size(current[0], end) <= limit(current[0]):
            current[1] = end
            continue
        if current is not None:
            spans.append((current[0], current[1]))
        current = [start, end]
    if current is not None:
        spans.append((current[0], current[1]))
    return spans


def _line_windows(source: _Source, first: int, last: int, budget: int) -> list[tuple[int, int]]:
    windows: list[tuple[int, int]] = []
    start = first
    for row in range(first, last + 1):
        if row > start and source.size(start, row) > budget:
            windows.append((start, row - 1))
            start = row
    windows.append((start, last))
    return windows


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


# ---------------------------------------------------------------------------------------------- text


_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CONFIG_HEADER = re.compile(r"^(?:\[[^\]\n]+\]\s*$|[A-Za-z_][\w.-]*\s*[:=](?:\s|$))")
_MAX_OUTLINE_LINES = 200
_MAX_OUTLINE_LINE = 300
_CONFIG_SUFFIXES = (".toml", ".ini", ".cfg", ".conf", ".yaml", ".yml", ".properties", ".env")


@dataclass(eq=False)
class _Section:
    level: int
    title: str
    start: int
    end: int = 0
    qualified_name: str = ""
    parent: _Section | None = None
    children: list[_Section] = field(default_factory=list)


class _TextFile:
    """Markdown by headings, any other text by blank-line paragraphs, both under the budget."""

    def __init__(self, path: str, language: str, source: _Source, budget: int) -> None:
        self.path = path
        self.language = language
        self.source = source
        self.budget = budget
        self.chunks: list[Chunk] = []
        self.headings: list[_Section] = self._find_headings() if language == MARKDOWN else []

    def _find_headings(self) -> list[_Section]:
        sections: list[_Section] = []
        fence: str | None = None
        for row, line in enumerate(self.source.lines):
            fence_match = _FENCE.match(line)
            if fence_match:
                marker = fence_match.group(1)
                if fence is None:
                    fence = marker[0] * 3
                elif marker.startswith(fence):
                    fence = None
                continue
            if fence is not None or not line.startswith(("#", " ")):
                continue
            heading = _HEADING.match(line)
            if heading:
                sections.append(_Section(len(heading.group(1)), heading.group(2).strip() or "#", row))
        # nest by level; a section ends where the next one of the same or a higher level starts
        stack: list[_Section] = []
        last_row = self.source.row_count - 1
        for section in sections:
            while stack and stack[-1].level >= section.level:
                stack.pop().end = section.start - 1
            if stack:
                section.parent = stack[-1]
                stack[-1].children.append(section)
            section.qualified_name = (
                f"{section.parent.qualified_name} > {section.title}" if section.parent else section.title
            )
            stack.append(section)
        for section in stack:
            section.end = last_row
        return sections

    def symbols(self) -> list[Symbol]:
        symbols = []
        for section in self.headings:
            end = section.end
            while end > section.start and self.source.blank(end):
                end -= 1
            symbols.append(
                Symbol(
                    path=self.path,
                    name=section.title,
                    qualified_name=section.qualified_name,
                    kind="section",
                    parent=section.parent.qualified_name if section.parent else None,
                    start_line=section.start + 1,
                    end_line=end + 1,
                    signature=self.source.lines[section.start].strip(),
                    docstring=self._first_paragraph(section),
                )
            )
        return symbols

    def _first_paragraph(self, section: _Section) -> str:
        lines: list[str] = []
        stop = section.children[0].start if section.children else section.end + 1
        for row in range(section.start + 1, stop):
            line = self.source.lines[row].strip()
            if not line:
                if lines:
                    break
                continue
            lines.append(line)
        return " ".join(lines)[:500]

    def build_chunks(self) -> list[Chunk]:
        top = [section for section in self.headings if section.parent is None]
        preamble_end = top[0].start - 1 if top else self.source.row_count - 1
        self._paragraphs(0, preamble_end, None)
        for section in top:
            self._chunk_section(section, section.start)
        return self.chunks

    def _chunk_section(self, section: _Section, first: int) -> None:
        """The section from row ``first`` (its heading, or a bare parent heading above it)."""
        if self.source.size(first, section.end) <= self.budget:
            self._emit(first, section.end, section.qualified_name)
            return
        if not section.children:
            self._paragraphs(first, section.end, section.qualified_name)
            return
        intro_end = section.children[0].start - 1
        if all(self.source.blank(row) for row in range(section.start + 1, intro_end + 1)):
            # a heading with nothing under it but subsections goes with the first of them
            self._chunk_section(section.children[0], first)
        else:
            self._paragraphs(first, intro_end, section.qualified_name)
            self._chunk_section(section.children[0], section.children[0].start)
        for child in section.children[1:]:
            self._chunk_section(child, child.start)

    def _paragraphs(self, first: int, last: int, symbol: str | None) -> None:
        source = self.source
        if first > last:
            return
        if source.size(first, last) <= self.budget:
            self._emit(first, last, symbol)
            return
        # paragraphs: runs of non-blank rows, each with the blank rows before it
        units: list[tuple[int, int]] = []
        start = first
        for row in range(first, last + 1):
            if row > first and source.blank(row - 1) and not source.blank(row) and row > start:
                units.append((start, row - 1))
                start = row
        units.append((start, last))
        current: list[int] | None = None
        for unit_start, unit_end in units:
            if current is not None and source.size(current[0], unit_end) <= self.budget:
                current[1] = unit_end
                continue
            if current is not None:
                self._emit(current[0], current[1], symbol)
                current = None
            if source.size(unit_start, unit_end) > self.budget:
                for window in _line_windows(source, unit_start, unit_end, self.budget):
                    self._emit(*window, symbol)
            else:
                current = [unit_start, unit_end]
        if current is not None:
            self._emit(current[0], current[1], symbol)

    def _emit(self, first: int, last: int, symbol: str | None) -> None:
        source = self.source
        while first < last and source.blank(first):
            first += 1
        while last > first and source.blank(last):
            last -= 1
        if source.blank(first):
            return
        text = source.rows(first, last)
        step = max(self.budget, 1)
        for offset in range(0, len(text), step):
            piece = text[offset : offset + step]
            self.chunks.append(Chunk(self.path, first + 1, last + 1, symbol, "text", self.language, piece))

    def outline(self) -> str:
        lines = self.source.lines
        selected: list[str] = []
        if self.headings:
            selected = [lines[section.start].strip() for section in self.headings]
        elif self.path.lower().endswith(_CONFIG_SUFFIXES):
            selected = [line for line in lines if _CONFIG_HEADER.match(line)]
        if not selected:
            selected = [line for line in lines[:50] if line.strip()][:10]
        return _join_outline(selected[:_MAX_OUTLINE_LINES])


# ---------------------------------------------------------------------------------------------- entry


def parse_file(path: str, data: bytes | str, *, mtime_ns: int = 0, chunk_tokens: int = 400) -> ParsedFile:
    """Parse one file: its record (with outline), symbols, references and chunks.

    ``path`` is workspace-relative POSIX; ``data`` the file's bytes (invalid UTF-8 is decoded with
    replacement characters) or text. ``chunk_tokens`` is the chunk budget in ``estimate_tokens`` units.
    Never raises on malformed source: tree-sitter recovers from syntax errors and the symbols it still
    finds are kept; a language whose grammar is missing falls back to the text chunker.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
        text = data
    else:
        raw = bytes(data)
        text = raw.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    source = _Source(text)
    language = detect_language(path, text)
    budget = max(chunk_tokens, 1) * CHARS_PER_TOKEN

    loaded = grammar(language)
    parsed: _CodeFile | _TextFile
    if loaded is not None:
        parsed = _CodeFile(path, language, source, loaded, budget)
        symbols, references = parsed.symbols(), parsed.references()
    else:
        parsed = _TextFile(path, language, source, budget)
        symbols, references = parsed.symbols(), []
    chunks = parsed.build_chunks()
    record = FileRecord(
        path=path,
        language=language,
        size=len(raw),
        mtime_ns=mtime_ns,
        sha256=hashlib.sha256(raw).hexdigest(),
        outline=parsed.outline(),
    )
    return ParsedFile(record=record, symbols=symbols, chunks=chunks, references=references)
