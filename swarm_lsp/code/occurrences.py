"""Where a name occurs in a file as code: every identifier token spelled like it, with its role.

Strings and comments are never counted (they are not identifier nodes). Each occurrence says what
role it plays, so a rename can tell a definition, an import and a use apart:

- ``definition``: the name of a function, class or method being defined;
- ``import``: inside an import statement (``from m import name``, ``import name``);
- ``attribute``: after a dot (``module.name``, ``obj.name``), with the text before the dot;
- ``keyword``: a keyword argument's name at a call (``f(name=1)``);
- ``use``: any other identifier (a call, a reference, an assignment target).

Columns are 0-based character offsets into the line (not bytes), end exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tree_sitter import Node

from swarm_lsp.code.languages import detect_language, grammar

Role = Literal["definition", "import", "attribute", "keyword", "use"]

IDENTIFIER_TYPES = frozenset(
    {
        "identifier",
        "type_identifier",
        "field_identifier",
        "property_identifier",
        "shorthand_property_identifier",
        "constant",
    }
)
_DEFINITION_PARENTS = frozenset(
    {
        "function_definition",
        "class_definition",
        "function_declaration",
        "class_declaration",
        "method_definition",
        "method_declaration",
        "function_item",
        "struct_item",
        "type_spec",
    }
)
_IMPORT_ANCESTORS = frozenset(
    {"import_statement", "import_from_statement", "import_declaration", "use_declaration", "import_spec"}
)
_ATTRIBUTE_PARENTS = frozenset({"attribute", "member_expression", "selector_expression", "field_expression"})


@dataclass(frozen=True)
class Occurrence:
    path: str
    line: int
    """1-based."""
    start_col: int
    end_col: int
    role: Role
    qualifier: str = ""
    """For an attribute: the text before the dot (``pkg.mod`` in ``pkg.mod.name``)."""
    line_text: str = ""


def name_occurrences(path: str, text: str, name: str) -> list[Occurrence] | None:
    """Every occurrence of `name` as an identifier in `text`, in order; None when the file's
    language has no grammar here (the caller then knows nothing, rather than "no occurrence")."""
    if name not in text:
        return []
    loaded = grammar(detect_language(path, text))
    if loaded is None:
        return None
    data = text.encode()
    lines = text.split("\n")
    found: list[Occurrence] = []
    stack = [loaded.parser().parse(data).root_node]
    encoded = name.encode()
    while stack:
        node = stack.pop()
        if node.type in IDENTIFIER_TYPES:
            if data[node.start_byte : node.end_byte] == encoded:
                found.append(_occurrence(path, node, data, lines))
            continue
        if node.child_count:
            stack.extend(reversed(node.children))
    return found


def _occurrence(path: str, node: Node, data: bytes, lines: list[str]) -> Occurrence:
    row, byte_col = node.start_point
    line_bytes = lines[row].encode() if row < len(lines) else b""
    start_col = len(line_bytes[:byte_col].decode(errors="replace"))
    end_col = start_col + len(data[node.start_byte : node.end_byte].decode(errors="replace"))
    role, qualifier = _role(node, data)
    return Occurrence(
        path, row + 1, start_col, end_col, role, qualifier, lines[row] if row < len(lines) else ""
    )


def _role(node: Node, data: bytes) -> tuple[Role, str]:
    parent = node.parent
    if parent is None:
        return "use", ""
    if parent.type in _DEFINITION_PARENTS and parent.child_by_field_name("name") == node:
        return "definition", ""
    ancestor: Node | None = parent
    while ancestor is not None:
        if ancestor.type in _IMPORT_ANCESTORS:
            return "import", ""
        if ancestor.type.endswith(("statement", "definition", "declaration", "block")):
            break
        ancestor = ancestor.parent
    if parent.type in _ATTRIBUTE_PARENTS:
        target = parent.child_by_field_name("object") or parent.child_by_field_name("operand")
        target = target or parent.child_by_field_name("value") or parent.child_by_field_name("argument")
        if target is not None and target != node:
            return "attribute", data[target.start_byte : target.end_byte].decode(errors="replace")
    if parent.type == "keyword_argument" and parent.child_by_field_name("name") == node:
        return "keyword", ""
    return "use", ""
