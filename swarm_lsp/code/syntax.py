"""Syntax checks: does code parse, where are its syntax errors, and what are its tokens apart from
comments and docstrings.

tree-sitter finds ERROR and MISSING nodes in any language with a grammar; for Python, `python_error`
adds the interpreter's own parser, which catches what tree-sitter forgives (bad indentation, an
empty block). Results are plain (line numbers and strings): no tree-sitter node leaves this module.
A language without a grammar ("text", "markdown") always parses and has no errors or tokens.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass

from tree_sitter import Node

from swarm_lsp.code.languages import grammar

__all__ = ["SyntaxProblem", "code_change", "parses", "python_error", "syntax_errors"]


@dataclass(frozen=True)
class SyntaxProblem:
    """One syntax error tree-sitter found: its lines (1-based, inclusive) and what is wrong there."""

    line: int
    end_line: int
    message: str
    """``missing ')'``, ``unexpected 'text'`` or ``syntax error``."""

    def describe(self, line_offset: int = 0) -> str:
        """``line 12: missing ')'``, the line moved by `line_offset` (for a snippet cut from a file)."""
        return f"line {self.line + line_offset}: {self.message}"


def parses(language: str, text: str) -> bool:
    """Whether `text` parses without an error in `language`'s grammar."""
    loaded = grammar(language)
    if loaded is None:
        return True
    return not loaded.parser().parse(text.encode()).root_node.has_error


def syntax_errors(language: str, text: str) -> list[SyntaxProblem]:
    """The syntax errors (ERROR and MISSING nodes) of `text`, in document order."""
    loaded = grammar(language)
    if loaded is None:
        return []
    return [_problem(node) for node in _errors(loaded.parser().parse(text.encode()).root_node)]


def python_error(source: str) -> str:
    """Why Python's own parser rejects `source` (``line 3: expected an indented block``), or ""."""
    try:
        with warnings.catch_warnings():  # invalid escapes in the user's code are not our concern
            warnings.simplefilter("ignore")
            ast.parse(source)
    except SyntaxError as error:
        where = f"line {error.lineno}: " if error.lineno else ""
        return f"{where}{error.msg}"
    except ValueError as error:  # a NUL byte in the source
        return str(error)
    return ""


def code_change(language: str, old: str, new: str, *, line_offset: int = 0) -> str:
    """Where `new` differs from `old` apart from comments and docstrings, or "" when it does not.

    ``line 4: 'x' was added``, ``line 4: 'x' became 'y'`` or ``code was removed``; the line is
    `new`'s, moved by `line_offset`.
    """
    loaded = grammar(language)
    if loaded is None:
        return ""
    parser = loaded.parser()
    old_tokens = _code_tokens(parser.parse(old.encode()).root_node)
    new_tokens = _code_tokens(parser.parse(new.encode()).root_node)
    if [text for text, _ in old_tokens] == [text for text, _ in new_tokens]:
        return ""
    for index, (text, row) in enumerate(new_tokens):
        line = row + 1 + line_offset
        if index >= len(old_tokens):
            return f"line {line}: {text!r} was added"
        if old_tokens[index][0] != text:
            return f"line {line}: {old_tokens[index][0]!r} became {text!r}"
    return "code was removed"


def _errors(root: Node) -> list[Node]:
    """The ERROR and MISSING nodes under `root`, in document order."""
    found: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if not node.has_error:
            continue
        if node.is_error or node.is_missing:
            found.append(node)
        stack.extend(reversed(node.children))
    return found


def _problem(node: Node) -> SyntaxProblem:
    line, end_line = node.start_point.row + 1, node.end_point.row + 1
    if node.is_missing:
        return SyntaxProblem(line, end_line, f"missing {node.type!r}")
    text = (node.text or b"").decode("utf-8", "replace").strip().split("\n")[0][:40]
    return SyntaxProblem(line, end_line, f"unexpected {text!r}" if text else "syntax error")


def _code_tokens(root: Node) -> list[tuple[str, int]]:
    """The leaf tokens of a tree with comments and docstring-like string statements left out."""
    tokens: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if "comment" in node.type or _is_string_statement(node):
            continue
        if node.child_count == 0:
            text = (node.text or b"").decode("utf-8", "replace")
            if text.strip():
                tokens.append((text, node.start_point.row))
            continue
        stack.extend(reversed(node.children))
    return tokens


def _is_string_statement(node: Node) -> bool:
    """A statement that is only a string: a Python docstring (or a JS directive)."""
    if node.type != "expression_statement" or node.named_child_count != 1:
        return False
    child = node.named_children[0]
    return child.type in ("string", "concatenated_string")
