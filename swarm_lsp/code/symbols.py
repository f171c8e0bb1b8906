"""Symbols (definitions and Markdown sections) and references (uses of names) of one file.

Paths are workspace-relative POSIX strings. Lines are 1-based and inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm_lsp.code.definitions import ParsedCode, query_cursor
from swarm_lsp.code.languages import MARKDOWN, detect_language, grammar
from swarm_lsp.code.parsing import SourceText
from swarm_lsp.code.sections import Section, find_sections

__all__ = ["Reference", "Symbol", "code_references", "code_symbols", "extract_symbols", "section_symbols"]

_HIDDEN_KINDS = frozenset({"impl"})  # a scope for its members' names, not a symbol of its own
_REFERENCE_KIND_RANK = {"reference": 0, "type": 1, "call": 2, "import": 3}


@dataclass(frozen=True)
class Symbol:
    path: str
    name: str
    qualified_name: str  # e.g. "Request.get_json"
    kind: str  # "function" | "method" | "class" | "interface" | "struct" | "enum" | "trait" | "type" | ...
    parent: str | None  # qualified name of the enclosing symbol
    start_line: int
    end_line: int
    signature: str
    docstring: str


@dataclass(frozen=True)
class Reference:
    """A use of a name (a call, a type mention, an import) at a line, for the repo graph."""

    path: str
    name: str
    line: int
    kind: str = "reference"  # "call" | "import" | "type" | "reference"


def extract_symbols(path: str, text: str) -> list[Symbol]:
    """The symbols of one file: its definitions if its grammar loads, its sections if it is Markdown."""
    source = SourceText(text.removeprefix("\ufeff"))
    language = detect_language(path, source.text)
    loaded = grammar(language)
    if loaded is not None:
        return code_symbols(ParsedCode(path, source, loaded))
    if language == MARKDOWN:
        return section_symbols(path, source, find_sections(source))
    return []


def code_symbols(code: ParsedCode) -> list[Symbol]:
    return [
        Symbol(
            path=code.path,
            name=d.name,
            qualified_name=d.qualified_name,
            kind=d.kind,
            parent=d.parent_name,
            start_line=d.start_row + 1,
            end_line=d.end_row + 1,
            signature=d.signature,
            docstring=d.docstring,
        )
        for d in code.definitions
        if d.kind not in _HIDDEN_KINDS
    ]


def code_references(code: ParsedCode) -> list[Reference]:
    """One reference per name and line, of its most telling kind, in line order."""
    source = code.source
    definition_names = {d.name_start for d in code.definitions}
    kinds: dict[tuple[str, int], str] = {}
    for kind, nodes in query_cursor(code.grammar.references).captures(code.root).items():
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
        Reference(code.path, name, line, kind)
        for (name, line), kind in sorted(kinds.items(), key=lambda item: (item[0][1], item[0][0]))
    ]


def section_symbols(path: str, source: SourceText, sections: list[Section]) -> list[Symbol]:
    symbols = []
    for section in sections:
        end = section.end
        while end > section.start and source.blank(end):
            end -= 1
        symbols.append(
            Symbol(
                path=path,
                name=section.title,
                qualified_name=section.qualified_name,
                kind="section",
                parent=section.parent.qualified_name if section.parent else None,
                start_line=section.start + 1,
                end_line=end + 1,
                signature=source.lines[section.start].strip(),
                docstring=_first_paragraph(source, section),
            )
        )
    return symbols


def _first_paragraph(source: SourceText, section: Section) -> str:
    lines: list[str] = []
    stop = section.children[0].start if section.children else section.end + 1
    for row in range(section.start + 1, stop):
        line = source.lines[row].strip()
        if not line:
            if lines:
                break
            continue
        lines.append(line)
    return " ".join(lines)[:500]
