"""When a code kind's edit is valid, and so may win the vote (`validate_edit`).

A valid edit parses (tree-sitter finds no ERROR or MISSING node where the selection alone had
none), the file with the edit applied has no more syntax errors than before (for Python also
checked with `ast`, which catches indentation that tree-sitter forgives), it changes something,
and, for ``document``, its tokens apart from comments and docstrings are the selection's. The
syntax checks themselves live in `swarm_lsp.code.syntax`.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Sequence

from swarm_lsp.code.languages import has_grammar
from swarm_lsp.code.syntax import SyntaxProblem, code_change, parses, python_error, syntax_errors
from swarm_lsp.swarm.tasks import Edit, Task, apply_edit, line_prefix

__all__ = ["normalised_code", "validate_edit"]


def validate_edit(task: Task, edit: Edit) -> tuple[bool, str]:
    """Whether `edit` may be applied to ``task.file_text``, and if not, why.

    It must apply (the range still holds ``edit.original_text``) and change more than whitespace.
    For a language with a grammar, the new code alone must parse when the selection alone did, and
    the edited file must have no more syntax errors than the file has now (Python: and still pass
    `ast.parse` if it did). A ``fix`` of a selection holding a syntax error must remove it; a
    ``document`` edit must leave the code apart from comments and docstrings unchanged.
    Languages without a grammar ("text", "markdown") pass once the edit applies and changes something.
    """
    if task.file_text is None:
        return False, "the task has no file text to apply the edit to"
    try:
        edited = apply_edit(task.file_text, edit)
    except ValueError as error:
        return False, str(error)
    if normalised_code(edit.new_text) == normalised_code(edit.original_text):
        return False, "the answer returns the selected code unchanged"
    language = task.language
    if not has_grammar(language):
        return True, ""
    offset = edit.range.start_line - 1
    prefix = line_prefix(task.file_text, edit.range)
    old_fragment = _fragment(prefix, edit.original_text)
    new_fragment = _fragment(prefix, edit.new_text)
    if parses(language, old_fragment) and not parses(language, new_fragment):
        problem = syntax_errors(language, new_fragment)[0].describe(offset)
        return False, f"the new code does not parse ({problem})"
    before = _file_errors(language, task.file_text)
    after = syntax_errors(language, edited)
    if len(after) > len(before):
        old_lines = {problem.line for problem in before}
        fresh = next((problem for problem in after if problem.line not in old_lines), after[0])
        return False, f"the file would not parse with the edit ({fresh.describe()})"
    if task.kind == "fix":
        reason = _syntax_error_kept(edit, before, after)
        if reason:
            return False, reason
    if language == "python":
        reason = _python_regression(task.file_text, edited)
        if reason:
            return False, reason
    if task.kind == "document":
        change = code_change(language, old_fragment, new_fragment, line_offset=offset)
        if change:
            return False, f"the answer changes the code, not only its comments and docstrings ({change})"
    return True, ""


def normalised_code(code: str) -> str:
    """`code` with each line stripped and blank lines dropped: what makes two versions the same."""
    return "\n".join(line.strip() for line in code.replace("\r\n", "\n").split("\n") if line.strip())


def _fragment(prefix: str, code: str) -> str:
    """`code` as a standalone snippet: with its line's indentation before it, then dedented."""
    code = code.replace("\r\n", "\n")
    if prefix and not prefix.strip():
        code = prefix + code
    return textwrap.dedent(code)


@functools.lru_cache(maxsize=4)
def _file_errors(language: str, text: str) -> tuple[SyntaxProblem, ...]:
    """The syntax errors of the file as it is (cached: every voter's edit is checked against them)."""
    return tuple(syntax_errors(language, text))


def _syntax_error_kept(edit: Edit, before: Sequence[SyntaxProblem], after: Sequence[SyntaxProblem]) -> str:
    """A fix of a selection holding a syntax error must remove it, not just leave the file no worse."""
    first, last = edit.range.start_line, edit.range.end_line
    if not any(problem.line <= last and problem.end_line >= first for problem in before):
        return ""
    new_last = first + edit.new_text.count("\n")
    remaining = [problem for problem in after if first <= problem.line <= new_last]
    if remaining or len(after) >= len(before):
        where = f" ({remaining[0].describe()})" if remaining else ""
        return f"the fix leaves a syntax error in the selection{where}"
    return ""


@functools.lru_cache(maxsize=4)
def _python_parses(source: str) -> bool:
    return not python_error(source)


def _python_regression(old: str, new: str) -> str:
    """Python's own parser catches what tree-sitter forgives (bad indentation, an empty block)."""
    if not _python_parses(old):  # broken already, or syntax newer than this interpreter: no verdict
        return ""
    error = python_error(new)
    return f"the file would not parse with the edit ({error})" if error else ""
