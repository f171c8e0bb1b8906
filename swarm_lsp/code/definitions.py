"""The definitions of a code file: found by the grammar's query, nested, and described.

A definition is a function, class, struct, impl, variable, ... with its qualified name, its rows (with the
comments and attributes attached above it), its signature and docstring, and the rows of its body that a
collapsed view replaces with ``...``. `symbols` turns definitions into `Symbol`s; the index chunks by them.
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import re
from dataclasses import dataclass, field

from tree_sitter import Node, Query, QueryCursor

from swarm_lsp.code.languages import Grammar
from swarm_lsp.code.parsing import SourceText, Statement, last_row, statements

__all__ = ["CONTAINER_KINDS", "FUNCTION_KINDS", "Definition", "ParsedCode", "query_cursor"]

FUNCTION_KINDS = frozenset({"function", "method"})
CONTAINER_KINDS = frozenset(
    {"class", "interface", "struct", "enum", "trait", "impl", "namespace", "module", "union", "record"}
)
_CLASS_LIKE = CONTAINER_KINDS - {"namespace", "module"}
# Variables scope the functions written in them (`const api = { get() {} }` -> api.get).
_SCOPE_KINDS = FUNCTION_KINDS | CONTAINER_KINDS | {"variable", "constant"}
_CLOSERS = ("}", ")", "]", "end")
_MAX_SIGNATURE_LINES = 8
MAX_NESTING = 64
"""Definitions inside more than this many enclosing ones are not listed on their own (their text stays
in their ancestors'): each level repeats the qualified name of the level above, so 5,000 nested
namespaces would make 5,000 names of up to 10,000 characters from a 50 kB file."""
MAX_QUERY_DEPTH = 500
"""How deep below the root (in syntax nodes) a query match may start. tree-sitter's query time grows
with the square of the nesting: 5,000 nested C++ structs took 7 s, ten times as many would take
minutes. A definition level is 2 to 5 nodes, so this covers MAX_NESTING levels of definitions."""


def query_cursor(query: Query) -> QueryCursor:
    """A cursor for ``query`` whose matches start at most MAX_QUERY_DEPTH nodes deep."""
    cursor = QueryCursor(query)
    cursor.set_max_start_depth(MAX_QUERY_DEPTH)
    return cursor


_STRING_LITERAL = re.compile(r"^[rRuUbBfF]{0,2}(\"\"\"|'''|\"|')(.*)\1$", re.DOTALL)
_COMMENT_START = re.compile(r"^\s*(?:///?!?|/\*+!?|#+!?|\*+(?!/)|--)\s?")
_COMMENT_END = re.compile(r"\s*\*+/\s*$")
_TEMPLATE_ARGS = re.compile(r"<[^<>]*>")


@dataclass(eq=False)
class Definition:
    """One definition, rows 0-based; ``node``, ``outer`` and ``body`` are tree-sitter's, for code/ only."""

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
    header_row: int = 0  # the row the definition itself starts on, below its decorators
    chunk_start_row: int = 0  # start_row moved up over attached comments and attributes
    parent: Definition | None = None
    children: list[Definition] = field(default_factory=list)
    qualified_name: str = ""
    parent_name: str | None = None
    docstring: str = ""
    docstring_end_row: int = -1  # Python: the last row of the docstring statement
    signature: str = ""
    elided_rows: tuple[int, int] | None = None
    """The rows of the body a collapsed view replaces with ``...``, keeping header, docstring and closer."""

    @property
    def chunkable(self) -> bool:
        """Whether it gets chunks of its own; declarations without a body stay in their surroundings."""
        if self.kind in FUNCTION_KINDS:
            return self.body is not None
        return self.kind in CONTAINER_KINDS

    @property
    def statement(self) -> Statement:
        """The whole definition, wrappers included, as a statement to split at its parts."""
        return Statement(self.outer)


class ParsedCode:
    """One code file parsed by its grammar, with its definitions in source order.

    Never raises on malformed source: tree-sitter recovers from syntax errors and the definitions it still
    finds are kept.
    """

    def __init__(self, path: str, source: SourceText, grammar: Grammar) -> None:
        self.path = path
        self.language = grammar.spec.id
        self.source = source
        self.grammar = grammar
        self.spec = grammar.spec
        self.tree = grammar.parser().parse(source.data)
        self.root = self.tree.root_node
        self.definitions = self._find_definitions()
        self._top_level: list[Statement] | None = None  # the root's children, listed on first need
        self._top_last_rows: list[int] = []

    def top_level_statements(self, first: int, last: int) -> list[Statement]:
        """The top-level statements overlapping rows ``first..last``."""
        if self._top_level is None:
            self._top_level = statements(self.root.named_children)
            self._top_last_rows = [statement.last_row for statement in self._top_level]
        low = bisect.bisect_left(self._top_last_rows, first)
        found = []
        for statement in itertools.islice(self._top_level, low, None):
            if statement.first_row > last:
                break
            found.append(statement)
        return found

    # -- finding --------------------------------------------------------------------------------------

    def _find_definitions(self) -> list[Definition]:
        spec = self.spec
        found: dict[tuple[int, int, str], Definition] = {}
        for pattern, captures in query_cursor(self.grammar.definitions).matches(self.root):
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
            found[key] = Definition(node, outer, name, kind, scope, body, pattern, names[0].start_byte)

        definitions = self._nest(
            sorted(found.values(), key=lambda d: (d.outer.start_byte, -d.outer.end_byte))
        )
        for definition in definitions:
            self._describe(definition)
        return definitions

    def _nest(self, definitions: list[Definition]) -> list[Definition]:
        """Parents by containment (functions, containers and variables scope names), then qualified names;
        returns the definitions nested at most MAX_NESTING deep."""
        stack: list[Definition] = []
        kept: list[Definition] = []
        for definition in definitions:
            start, end = definition.outer.start_byte, definition.outer.end_byte
            while stack:
                top = stack[-1]
                top_start, top_end = top.outer.start_byte, top.outer.end_byte
                if top_start <= start and end <= top_end and (top_start, top_end) != (start, end):
                    break
                stack.pop()
            if len(stack) >= MAX_NESTING:
                continue
            kept.append(definition)
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
        return kept

    # -- describing -----------------------------------------------------------------------------------

    def _describe(self, definition: Definition) -> None:
        """Rows, attached comments, docstring, signature and the rows to elide."""
        source = self.source
        outer = definition.outer
        definition.start_row = outer.start_point.row
        definition.end_row = max(last_row(outer), definition.start_row)
        definition.header_row = definition.node.start_point.row

        attached = self.spec.comment_types | self.spec.attached_types
        comments: list[Node] = []
        first_row = definition.start_row
        sibling = outer.prev_named_sibling
        while sibling is not None and sibling.type in attached and last_row(sibling) >= first_row - 1:
            before = sibling.prev_sibling
            if before is not None and last_row(before) == sibling.start_point.row:
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
                    definition.docstring_end_row = last_row(first)
        if not definition.docstring and comments:
            definition.docstring = _clean_comment(
                "\n".join(source.slice(c.start_byte, c.end_byte) for c in reversed(comments))
            )
        definition.signature = self._signature(definition)
        definition.elided_rows = self._elision(definition)

    def _signature(self, definition: Definition) -> str:
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

    def _elision(self, definition: Definition) -> tuple[int, int] | None:
        body = definition.body
        if body is None:
            return None
        body_first, body_last = body.start_point.row, last_row(body)
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
