"""Task kinds: what the user asked for, the prompt each kind sends, and how each kind's answer is read.

Kinds:

- ``ask``: a question about the codebase, answered from the retrieved context, with citations.
- ``explain``: explain a selection, a symbol (named in ``prompt``) or a whole file.
- ``refactor``: an instruction plus a selection -> replacement code for the selection.
- ``document``: the selection again with docstrings and comments added, the code itself unchanged.
- ``fix``: a diagnostic plus the code it points at -> corrected code.
- ``chat``: a conversation; earlier turns travel in ``Task.history``.

``refactor``, ``document`` and ``fix`` are the code kinds (`CODE_KINDS`): their answer becomes an
`Edit` of the selection, and it can only win the vote when it is valid: it parses (tree-sitter finds
no ERROR or MISSING node where the selection alone had none), the file with the edit applied has
no more syntax errors than before (for Python also checked with `ast`, which catches indentation
that tree-sitter forgives), it changes something, and, for ``document``, its tokens apart from
comments and docstrings are the selection's.

Prompt layout (`build_messages`): one system message with the kind's role, a few rules and the
retrieved context (each piece headed ``--- path:start-end``), then, for chat, the earlier turns as
user/assistant messages, then one user message with the task: for the code kinds the selection
under a label with its line numbers, a few lines around it for indentation, and the reply format
(the code itself is shown unnumbered: small models copy numbers and rewrite worse; the text kinds
number each line, so answers can refer to lines). All voters get the same messages, so the backend
evaluates the prompt once.

Chat: the runner keeps a conversation's history; for the cached prefix to match exactly, the
user turn it stores should be the user message that was sent (``build_messages(...)[-1]``),
not just ``Task.prompt``, whenever the turn carried a selection or ``extra_context``.

Chat and the KV cache: the system message of a conversation must be byte-identical on every turn,
so the backend can reuse the cached prefix (system + earlier turns) and only evaluate the new
message. The context is therefore retrieved once, at the first turn, and passed unchanged as
``context`` on every later turn (the runner keeps it with the conversation); context retrieved for
a later turn goes in that turn's user message through ``extra_context``.

Answers are read forgivingly (`parse_answer`), because small models are sloppy: chat-template
tokens are cut, the code is taken from the first fenced block that looks like code (whatever its
language tag, closed or not) or else from the whole answer minus lead-in prose, copied line
numbers and echoed surrounding lines are removed, and dropped indentation is restored.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from tree_sitter import Node

from swarm_lsp.code.languages import Grammar, detect_language, grammar
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.index.chunker import parse_file
from swarm_lsp.models.base import Message

__all__ = [
    "CODE_KINDS",
    "TASK_KINDS",
    "Edit",
    "ParsedAnswer",
    "Task",
    "TaskKind",
    "TextRange",
    "apply_edit",
    "build_messages",
    "max_tokens_for",
    "parse_answer",
    "selection_around",
    "stop_strings",
    "validate_edit",
]

TaskKind = Literal["ask", "explain", "refactor", "document", "fix", "chat"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
CODE_KINDS = frozenset({"refactor", "document", "fix"})

CONTEXT_LINES = 3
"""Lines shown before and after a code kind's selection, so the model sees the indentation."""
FILE_LINES_SHOWN = 200
"""An ``explain`` of a whole file shows at most this many of its lines (the rest is in the context)."""
MAX_CODE_TOKENS = 4096
"""`max_tokens_for` never asks more than this (or the caller's default, when that is larger)."""

_FENCE_TAGS = {"text": "", "markdown": "markdown"}

_ROLES = {
    "ask": "You answer questions about the user's codebase.",
    "explain": "You explain code to a developer, clearly and briefly.",
    "refactor": "You rewrite code as the user instructs, keeping its behaviour unless told otherwise.",
    "document": "You add docstrings and comments to code without changing the code itself.",
    "fix": "You fix the reported problem in the code with the smallest change that works.",
    "chat": "You help the user with their codebase.",
}
_TEXT_RULES = (
    "- Answer from the context below. If the answer is not there, say so.\n"
    "- Cite the code you use as path:start-end, for example src/app.py:10-24.\n"
    "- Be brief."
)
_CODE_RULES = (
    "- Follow the names and style of the context below.\n"
    "- Reply with only the replacement code in one fenced code block: no line numbers, no other text."
)


# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class TextRange:
    """A span of a file: 1-based lines, inclusive.

    Columns are optional, 0-based character offsets into their line, ``end_col`` exclusive. With
    ``start_col`` None the range starts at the beginning of ``start_line``; with ``end_col`` None it
    ends at the end of ``end_line`` (before its line break). Both None: whole lines.
    """

    start_line: int
    end_line: int
    start_col: int | None = None
    end_col: int | None = None

    def __post_init__(self) -> None:
        if self.start_line < 1:
            raise ValueError(f"lines are numbered from 1, but the range starts at line {self.start_line}")
        if self.end_line < self.start_line:
            raise ValueError(
                f"the range ends (line {self.end_line}) before it starts (line {self.start_line})"
            )
        for name in ("start_col", "end_col"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"columns are counted from 0, but {name} is {value}")
        if (
            self.start_line == self.end_line
            and self.start_col is not None
            and self.end_col is not None
            and self.end_col < self.start_col
        ):
            raise ValueError(
                f"the range ends (column {self.end_col}) before it starts (column {self.start_col})"
            )

    @property
    def lines_label(self) -> str:
        """``12-20``, or ``12`` for one line."""
        if self.start_line == self.end_line:
            return str(self.start_line)
        return f"{self.start_line}-{self.end_line}"

    @property
    def lines_phrase(self) -> str:
        """``lines 12-20``, or ``line 12``."""
        return f"line {self.start_line}" if self.start_line == self.end_line else f"lines {self.lines_label}"


@dataclass
class Task:
    """One request from a front door.

    ``file_text`` is the file's current text (the editor's unsaved buffer when there is one); the
    code kinds need it, with ``path`` and ``range``. ``history`` holds a chat's earlier turns,
    oldest first, as user and assistant messages.
    """

    kind: TaskKind
    prompt: str = ""
    path: str | None = None
    range: TextRange | None = None
    file_text: str | None = None
    diagnostic: str | None = None
    history: Sequence[Message] = ()
    conversation_id: str | None = None

    @property
    def language(self) -> str:
        """The language id of ``path`` (refined by content), or "text" without a path."""
        if self.path is None:
            return "text"
        return detect_language(self.path, self.file_text or "")

    def selection_text(self) -> str:
        """The text in ``range`` (the whole file without a range; "" without ``file_text``)."""
        if self.file_text is None:
            return ""
        start, end = _span(self.file_text, self.range)
        return self.file_text[start:end]

    def validate(self) -> None:
        """Raise ValueError, saying what is missing or wrong, when the task cannot be run."""
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; use one of {', '.join(TASK_KINDS)}")
        if self.kind in ("ask", "chat") and not self.prompt.strip():
            raise ValueError(f"an {self.kind} task needs a prompt: the question or message")
        if self.kind == "refactor" and not self.prompt.strip():
            raise ValueError("a refactor task needs a prompt: the instruction, e.g. 'extract a function'")
        if self.kind == "explain" and self.path is None and not self.prompt.strip():
            raise ValueError("an explain task needs a path (a file or selection) or a prompt naming a symbol")
        if self.kind == "fix" and not (self.diagnostic or "").strip():
            raise ValueError("a fix task needs the diagnostic to fix (its message, code and source)")
        if self.kind in CODE_KINDS:
            missing = [
                name
                for name, value in (("path", self.path), ("file_text", self.file_text), ("range", self.range))
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"a {self.kind} task needs path, file_text and range (the selection); "
                    f"missing: {', '.join(missing)}"
                )
        if self.range is not None:
            if self.path is None:
                raise ValueError("a task with a range needs the path of the file the range is in")
            if self.file_text is None:
                raise ValueError("a task with a range needs file_text, the text the range points into")
            _check_range(self.file_text, self.range)
        for message in self.history:
            if message.role not in ("user", "assistant"):
                raise ValueError(
                    f"chat history holds only user and assistant turns, got a {message.role!r} message"
                )


@dataclass(frozen=True)
class Edit:
    """Replace ``range`` of ``path`` by ``new_text``.

    ``original_text`` is what the range held when the task was built: `apply_edit` refuses the
    edit when the file has changed there since.
    """

    path: str
    range: TextRange
    new_text: str
    original_text: str


@dataclass(frozen=True)
class ParsedAnswer:
    text: str
    """Markdown for the user; for the code kinds a short explanation (if any) and the code."""
    edit: Edit | None
    """The edit of a valid code answer; None for the text kinds and for invalid answers."""
    valid: bool
    invalid_reason: str = ""
    code: str | None = None
    """The replacement code as extracted and re-indented (for voting); None for the text kinds."""


# ---------------------------------------------------------------------------------------------- prompts


def build_messages(
    task: Task, context: str, *, context_citations: Sequence[str] = (), extra_context: str = ""
) -> list[Message]:
    """The chat messages for `task`: system (role, rules, context), chat history, then the task.

    ``context`` is the rendered context pack (``--- path:start-end`` headers); ``context_citations``
    its citations, listed so the model can copy them. For chat, pass the context retrieved at the
    conversation's first turn on every turn, so the system message stays identical and the backend
    reuses its cached prefix; ``extra_context``, if any, is context new to this turn and goes in
    the user message.
    """
    task.validate()
    messages = [Message("system", _system_text(task.kind, context, context_citations))]
    if task.kind == "chat":
        messages.extend(Message(m.role, m.content) for m in task.history if m.role in ("user", "assistant"))
    messages.append(Message("user", _user_text(task, extra_context)))
    return messages


def stop_strings(task: Task) -> list[str]:
    """Strings that end generation: chat-template tokens, and for text answers an invented next turn."""
    stops = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"]
    if task.kind not in CODE_KINDS:
        stops += ["\nUser:", "\nHuman:"]
    return stops


def max_tokens_for(task: Task, default: int) -> int:
    """How many tokens an answer may take: enough to rewrite the selection for the code kinds."""
    if task.kind not in CODE_KINDS:
        return default
    factor = 2.0 if task.kind == "document" else 1.5
    needed = int(estimate_tokens(task.selection_text()) * factor) + 64
    return max(default, min(needed, max(MAX_CODE_TOKENS, default)))


def _system_text(kind: str, context: str, citations: Sequence[str]) -> str:
    rules = _CODE_RULES if kind in CODE_KINDS else _TEXT_RULES
    parts = [f"{_ROLES[kind]}\nRules:\n{rules}"]
    if context.strip():
        parts.append(f"Context (each piece is headed by its path:start-end):\n\n{context.strip()}")
        if citations and kind not in CODE_KINDS:
            parts.append("Citable: " + ", ".join(dict.fromkeys(citations)))
    else:
        parts.append("Context: none was found in the workspace.")
    return "\n\n".join(parts)


def _user_text(task: Task, extra_context: str = "") -> str:
    view = _View.of(task)
    parts: list[str] = []
    if extra_context.strip():
        parts.append(f"More context:\n\n{extra_context.strip()}")
    if task.kind in CODE_KINDS:
        if view is None or task.range is None:
            raise ValueError(f"a {task.kind} task needs path, file_text and range (the selection)")
        parts.append(f"Task: {_code_instruction(task)}")
        parts.append(f"File: {task.path}")
        # Code the model must copy is shown without line numbers: small models copy the numbers
        # too, and rewrite less faithfully (measured with SmolLM2-135M); the labels carry them.
        if view.before:
            label = _lines_phrase(view.before).capitalize()
            parts.append(f"{label}, before the selection (for indentation only):\n{view.plain(view.before)}")
        parts.append(f"Selected {task.range.lines_phrase}, to replace:\n{view.plain(view.selection)}")
        if any(line.strip() for _, line in view.after):
            label = _lines_phrase(view.after).capitalize()
            parts.append(f"{label}, after the selection:\n{view.plain(view.after)}")
        parts.append(
            f"Reply with only the new code for {task.range.lines_phrase} in one "
            f"{view.fence}{view.tag} block. Keep the indentation."
        )
        return "\n\n".join(parts)
    if task.kind == "explain":
        parts.extend(_explain_parts(task, view))
    elif task.kind == "ask":
        parts.append(f"Question: {task.prompt.strip()}")
        parts.extend(_selection_parts(task, view))
        parts.append("Answer from the context and cite path:start-end.")
    else:  # chat
        parts.extend(_selection_parts(task, view))
        parts.append(task.prompt.strip())
    return "\n\n".join(parts)


def _code_instruction(task: Task) -> str:
    extra = task.prompt.strip()
    if task.kind == "fix":
        text = f"Fix this problem in the selected code: {(task.diagnostic or '').strip()}"
        return f"{text}\nHint: {extra}" if extra else text
    if task.kind == "document":
        text = "Add docstrings and comments to the selected code. Do not change the code itself."
        return f"{text} {extra}" if extra else text
    return extra


def _explain_parts(task: Task, view: _View | None) -> list[str]:
    asked = task.prompt.strip()
    if view is not None and task.range is not None:
        where = f"{task.path}:{task.range.start_line}-{task.range.end_line}"
        first = f"Explain what the selected code ({where}) does."
        return [
            f"{first} The user asks: {asked}" if asked else first,
            view.block(view.selection),
            "Cite path:start-end for what you use.",
        ]
    if view is not None:
        shown = view.file_lines[:FILE_LINES_SHOWN]
        note = ""
        if len(view.file_lines) > FILE_LINES_SHOWN:
            shown_of = f"the first {FILE_LINES_SHOWN} of {len(view.file_lines)} lines"
            note = f"\n({shown_of}; the rest is in the context)"
        first = f"Explain the file {task.path}: its purpose and its main parts."
        return [
            f"{first} The user asks: {asked}" if asked else first,
            view.block(list(enumerate(shown, 1))) + note,
            "Cite path:start-end for what you use.",
        ]
    if task.path is not None:
        first = f"Explain the file {task.path}: its purpose and its main parts."
        return [
            f"{first} The user asks: {asked}" if asked else first,
            "Cite path:start-end for what you use.",
        ]
    return [f"Explain {asked}.", "Cite path:start-end for what you use."]


def _selection_parts(task: Task, view: _View | None) -> list[str]:
    if view is not None and task.range is not None:
        return [f"Selected {task.range.lines_phrase} of {task.path}:\n{view.block(view.selection)}"]
    if task.path is not None:
        return [f"The user is looking at {task.path}."]
    return []


@dataclass(frozen=True)
class _View:
    """The selection and its surroundings as numbered lines, for the prompt."""

    tag: str
    fence: str
    width: int
    file_lines: list[str]
    selection: list[tuple[int, str]]
    before: list[tuple[int, str]]
    after: list[tuple[int, str]]

    @classmethod
    def of(cls, task: Task) -> _View | None:
        if task.file_text is None or task.path is None:
            return None
        text = task.file_text
        file_lines = [line.rstrip("\r") for line in text.split("\n")]
        rng = task.range
        selection: list[tuple[int, str]] = []
        before: list[tuple[int, str]] = []
        after: list[tuple[int, str]] = []
        last_shown = len(file_lines)
        if rng is not None:
            start, end = _span(text, rng)
            chosen = [line.rstrip("\r") for line in text[start:end].split("\n")]
            selection = list(enumerate(chosen, rng.start_line))
            first = max(1, rng.start_line - CONTEXT_LINES)
            before = [(n, file_lines[n - 1]) for n in range(first, rng.start_line)]
            stop = min(len(file_lines), rng.end_line + CONTEXT_LINES)
            after = [(n, file_lines[n - 1]) for n in range(rng.end_line + 1, stop + 1)]
            last_shown = stop
        longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
        language = detect_language(task.path, text)
        return cls(
            tag=_FENCE_TAGS.get(language, language),
            fence="`" * max(3, longest + 1),
            width=len(str(last_shown)),
            file_lines=file_lines,
            selection=selection,
            before=before,
            after=after,
        )

    def block(self, lines: Sequence[tuple[int, str]]) -> str:
        """A fenced block with each line numbered (``12 | code``), for answers that refer to lines."""
        body = "\n".join(f"{number:>{self.width}} | {line}".rstrip() for number, line in lines)
        return f"{self.fence}{self.tag}\n{body}\n{self.fence}"

    def plain(self, lines: Sequence[tuple[int, str]]) -> str:
        """A fenced block of the lines as they are, for code the answer rewrites."""
        body = "\n".join(line for _, line in lines)
        return f"{self.fence}{self.tag}\n{body}\n{self.fence}"


def _lines_phrase(lines: Sequence[tuple[int, str]]) -> str:
    first, last = lines[0][0], lines[-1][0]
    return f"line {first}" if first == last else f"lines {first}-{last}"


# ---------------------------------------------------------------------------------------------- ranges


def _line_starts(text: str) -> list[int]:
    starts = [0]
    index = text.find("\n")
    while index != -1:
        starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


def _line_end(text: str, starts: list[int], row: int) -> int:
    """The offset where 0-based line `row` ends, before its line break (``\\r\\n`` or ``\\n``)."""
    end = starts[row + 1] - 1 if row + 1 < len(starts) else len(text)
    if end > starts[row] and text[end - 1] == "\r":
        end -= 1
    return end


def _check_range(text: str, rng: TextRange) -> None:
    starts = _line_starts(text)
    if rng.end_line > len(starts):
        raise ValueError(f"the range ends at line {rng.end_line}, but the file has {len(starts)} lines")
    for line, col, name in ((rng.start_line, rng.start_col, "start"), (rng.end_line, rng.end_col, "end")):
        if col is None:
            continue
        length = _line_end(text, starts, line - 1) - starts[line - 1]
        if col > length:
            raise ValueError(
                f"the range's {name} column {col} is past the end of line {line}, "
                f"which has {length} characters"
            )


def _span(text: str, rng: TextRange | None) -> tuple[int, int]:
    """Character offsets [start, end) of `rng` in `text` (columns clamped to their line)."""
    if rng is None:
        return 0, len(text)
    starts = _line_starts(text)
    if rng.end_line > len(starts):
        raise ValueError(f"the range ends at line {rng.end_line}, but the file has {len(starts)} lines")
    first, last = rng.start_line - 1, rng.end_line - 1
    start = starts[first] + min(rng.start_col or 0, _line_end(text, starts, first) - starts[first])
    line_end = _line_end(text, starts, last)
    end = line_end if rng.end_col is None else min(starts[last] + rng.end_col, line_end)
    return start, max(start, end)


def selection_around(path: str, file_text: str, line: int) -> TextRange:
    """What an action at a cursor on 1-based `line` works on: the innermost definition around it
    (function, method, class, markdown section...), else the line itself."""
    around = [
        symbol
        for symbol in parse_file(path, file_text).symbols
        if symbol.kind != "variable" and symbol.start_line <= line <= symbol.end_line
    ]
    if not around:
        return TextRange(line, line)
    innermost = min(around, key=lambda symbol: symbol.end_line - symbol.start_line)
    return TextRange(innermost.start_line, innermost.end_line)


def apply_edit(file_text: str, edit: Edit) -> str:
    """`file_text` with `edit` applied; ValueError when the range no longer holds `edit.original_text`."""
    start, end = _span(file_text, edit.range)
    if file_text[start:end] != edit.original_text:
        raise ValueError(
            f"{edit.path} changed at {edit.range.lines_phrase} since the edit was made; run the task again"
        )
    return file_text[:start] + edit.new_text + file_text[end:]


# ---------------------------------------------------------------------------------------------- validation


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
    if _normalised(edit.new_text) == _normalised(edit.original_text):
        return False, "the answer returns the selected code unchanged"
    loaded = grammar(task.language)
    if loaded is None:
        return True, ""
    parser = loaded.parser()
    prefix = _line_prefix(task.file_text, edit.range)
    old_fragment = _fragment(prefix, edit.original_text)
    new_fragment = _fragment(prefix, edit.new_text)
    old_tree = parser.parse(old_fragment.encode())
    new_tree = parser.parse(new_fragment.encode())
    if not old_tree.root_node.has_error and new_tree.root_node.has_error:
        problem = _describe(_errors(new_tree.root_node)[0], edit.range.start_line - 1)
        return False, f"the new code does not parse ({problem})"
    before = _file_errors(task.language, task.file_text)
    after_root = parser.parse(edited.encode()).root_node
    after = _errors(after_root)
    if len(after) > len(before):
        old_rows = {node.start_point.row for node in before}
        fresh = next((node for node in after if node.start_point.row not in old_rows), after[0])
        return False, f"the file would not parse with the edit ({_describe(fresh, 0)})"
    if task.kind == "fix":
        reason = _syntax_error_kept(edit, before, after)
        if reason:
            return False, reason
    if task.language == "python":
        reason = _python_regression(task.file_text, edited)
        if reason:
            return False, reason
    if task.kind == "document":
        reason = _code_changed(loaded, old_fragment, new_fragment, edit.range.start_line - 1)
        if reason:
            return False, reason
    return True, ""


def _normalised(code: str) -> str:
    """`code` with each line stripped and blank lines dropped: what makes two versions the same."""
    return "\n".join(line.strip() for line in code.replace("\r\n", "\n").split("\n") if line.strip())


def _line_prefix(file_text: str, rng: TextRange) -> str:
    """The text before the range on its first line."""
    starts = _line_starts(file_text)
    start, _ = _span(file_text, rng)
    return file_text[starts[rng.start_line - 1] : start]


def _fragment(prefix: str, code: str) -> str:
    """`code` as a standalone snippet: with its line's indentation before it, then dedented."""
    code = code.replace("\r\n", "\n")
    if prefix and not prefix.strip():
        code = prefix + code
    return textwrap.dedent(code)


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


def _describe(node: Node, line_offset: int) -> str:
    line = node.start_point.row + 1 + line_offset
    if node.is_missing:
        return f"line {line}: missing {node.type!r}"
    text = (node.text or b"").decode("utf-8", "replace").strip().split("\n")[0][:40]
    return f"line {line}: unexpected {text!r}" if text else f"line {line}: syntax error"


def _syntax_error_kept(edit: Edit, before: list[Node], after: list[Node]) -> str:
    """A fix of a selection holding a syntax error must remove it, not just leave the file no worse."""
    first, last = edit.range.start_line - 1, edit.range.end_line - 1
    if not any(node.start_point.row <= last and node.end_point.row >= first for node in before):
        return ""
    new_last = first + edit.new_text.count("\n")
    remaining = [node for node in after if first <= node.start_point.row <= new_last]
    if remaining or len(after) >= len(before):
        where = f" ({_describe(remaining[0], 0)})" if remaining else ""
        return f"the fix leaves a syntax error in the selection{where}"
    return ""


@functools.lru_cache(maxsize=4)
def _file_errors(language: str, text: str) -> list[Node]:
    """The syntax errors of the file as it is (cached: every voter's edit is checked against them)."""
    loaded = grammar(language)
    assert loaded is not None
    return _errors(loaded.parser().parse(text.encode()).root_node)


def _python_problem(source: str) -> SyntaxError | None:
    try:
        with warnings.catch_warnings():  # invalid escapes in the user's code are not our concern
            warnings.simplefilter("ignore")
            ast.parse(source)
    except (SyntaxError, ValueError) as error:  # ValueError: a NUL byte in the source
        return error if isinstance(error, SyntaxError) else SyntaxError(str(error))
    return None


@functools.lru_cache(maxsize=4)
def _python_parses(source: str) -> bool:
    return _python_problem(source) is None


def _python_regression(old: str, new: str) -> str:
    """Python's own parser catches what tree-sitter forgives (bad indentation, an empty block)."""
    if not _python_parses(old):  # broken already, or syntax newer than this interpreter: no verdict
        return ""
    error = _python_problem(new)
    if error is None:
        return ""
    where = f"line {error.lineno}: " if error.lineno else ""
    return f"the file would not parse with the edit ({where}{error.msg})"


def _code_changed(loaded: Grammar, old: str, new: str, line_offset: int) -> str:
    """Why `new` is not `old` with only comments and docstrings added, or "" when it is."""
    parser = loaded.parser()
    old_tokens = _code_tokens(parser.parse(old.encode()).root_node)
    new_tokens = _code_tokens(parser.parse(new.encode()).root_node)
    if [text for text, _ in old_tokens] == [text for text, _ in new_tokens]:
        return ""
    changed = "the answer changes the code, not only its comments and docstrings"
    for index, (text, row) in enumerate(new_tokens):
        line = row + 1 + line_offset
        if index >= len(old_tokens):
            return f"{changed} (line {line}: {text!r} was added)"
        if old_tokens[index][0] != text:
            return f"{changed} (line {line}: {old_tokens[index][0]!r} became {text!r})"
    return f"{changed} (code was removed)"


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


# ---------------------------------------------------------------------------------------------- answers

_TURN_MARKERS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|end|>",
    "<|user|>",
    "<|system|>",
)
_LEADING_ROLE = re.compile(
    r"^\s*(?:<\|im_start\|>\s*assistant|<\|assistant\|>|<start_of_turn>model"
    r"|<\|start_header_id\|>assistant<\|end_header_id\|>|assistant:?)[ \t]*\n",
    re.IGNORECASE,
)
_INVENTED_TURN = re.compile(r"\n(?:User|Human|### (?:User|Instruction)):", re.IGNORECASE)
_QUESTION_LABEL = re.compile(r"^\s*(?:question|q)\s*:", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^\s*(?:[Aa]ssistant|[Aa]nswer|A)\s*:\s*")
_FENCE_LINE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_NUMBER_PREFIX = re.compile(r"^\s*(\d{1,6})[ \t]?[|:][ \t]?")
_LEAD_IN = re.compile(
    r"^(?:here(?:'s| is| are)|sure|certainly|of course|okay|ok\b|below|great|done|"
    r"the (?:refactored|fixed|updated|corrected|documented|new|following|modified|complete)|"
    r"this (?:is|code|version|should)|i(?:'ve| have)|answer|output|result|explanation|"
    r"refactored|fixed|updated|corrected|documented|modified|note)\b",
    re.IGNORECASE,
)
_CODE_MARKS = re.compile(r"[=;{}\[\]<>$]|->|=>|::|\w\(|^\s*[@#]|\)\s*:?\s*$")
_KEYWORD_TEXT = """
and as assert async await break case catch class const continue def default defer del do elif else enum
except export extends extern final finally fn for from func function global go if impl import in interface
is lambda let loop match mod module namespace new nonlocal not or package pass pub private protected public
raise return static struct switch template this throw throws trait try type typedef union unsafe use using
var void volatile while with yield
"""
_KEYWORDS = frozenset(_KEYWORD_TEXT.split())


def parse_answer(task: Task, raw: str) -> ParsedAnswer:
    """Read one model answer for `task`; see the module docstring for what is forgiven."""
    cleaned = _clean(raw)
    if task.kind not in CODE_KINDS:
        text = _strip_echoed_question(task, cleaned)
        return ParsedAnswer(text, None, bool(text), "" if text else "the answer is empty")
    if not cleaned.strip():
        return ParsedAnswer("", None, False, "the answer is empty")
    view = _View.of(task)
    if view is None or task.range is None or task.path is None:
        return ParsedAnswer(cleaned, None, False, f"a {task.kind} task needs path, file_text and range")
    code, explanation = _extract_code(task, cleaned, view, _echo_lines(task))
    if code is None or not code.strip():
        return ParsedAnswer(cleaned, None, False, "the answer holds no code")
    lines = _strip_line_numbers(code.split("\n"), task.selection_text(), task.range)
    lines = _trim_echoed_context(lines, view)
    if not any(line.strip() for line in lines):
        return ParsedAnswer(cleaned, None, False, "the answer holds no code")
    selection = task.selection_text().replace("\r\n", "\n")
    prefix = _line_prefix(task.file_text or "", task.range)
    newline = "\r\n" if "\r\n" in (task.file_text or "") else "\n"
    chosen: tuple[str, Edit, bool, str] | None = None
    for candidate in _indent_candidates(lines, selection, prefix):
        edit = Edit(task.path, task.range, candidate.replace("\n", newline), task.selection_text())
        ok, reason = validate_edit(task, edit)
        if ok:
            chosen = (candidate, edit, True, "")
            break
        if chosen is None:
            chosen = (candidate, edit, False, reason)
    if chosen is None:
        return ParsedAnswer(cleaned, None, False, "the answer holds no code")
    final, edit, ok, reason = chosen
    view_code = (prefix + final) if prefix and not prefix.strip() else final
    text = f"{view.fence}{view.tag}\n{textwrap.dedent(view_code)}\n{view.fence}"
    if explanation:
        text = f"{explanation}\n\n{text}"
    return ParsedAnswer(text, edit if ok else None, ok, reason, code=final)


def _clean(raw: str) -> str:
    """The answer without chat-template tokens, a leading role header or an invented next turn."""
    text = raw.replace("\r\n", "\n")
    text = _LEADING_ROLE.sub("", text, count=1)
    cut = min((i for i in (text.find(marker) for marker in _TURN_MARKERS) if i != -1), default=len(text))
    text = text[:cut]
    invented = _INVENTED_TURN.search(text)
    if invented:
        text = text[: invented.start()]
    text = text.rstrip()
    if text.endswith("</s>"):
        text = text[: -len("</s>")]
    return text.strip("\n").rstrip()


def _loose(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text).strip().lower()


def _strip_echoed_question(task: Task, text: str) -> str:
    lines = text.strip().split("\n")
    question = _loose(task.prompt)
    while lines and question and _loose(_QUESTION_LABEL.sub("", lines[0])) == question:
        lines.pop(0)
    return _ANSWER_LABEL.sub("", "\n".join(lines).strip(), count=1).strip()


def _echo_lines(task: Task) -> set[str]:
    """The non-code lines of the prompt, loosely normalised: a model repeating them is not writing code."""
    _, outside_code = _fenced_blocks(_user_text(task))
    echoes = {_loose(line) for line in outside_code.split("\n")}
    echoes.add(_loose(task.prompt))
    echoes.discard("")
    return echoes


@dataclass(frozen=True)
class _Block:
    info: str
    body: str


def _fenced_blocks(text: str) -> tuple[list[_Block], str]:
    """The fenced blocks of `text` (an unclosed last one runs to the end) and the prose outside them."""
    blocks: list[_Block] = []
    prose: list[str] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE_LINE.match(lines[index])
        if not opening:
            prose.append(lines[index])
            index += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        body: list[str] = []
        index += 1
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            index += 1
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            if not body and _FENCE_LINE.match(line):  # "```python" twice: the model restarted the block
                continue
            if fence[0] == "`" and stripped.endswith(fence) and not stripped.startswith(fence):
                body.append(_unindent(line.rstrip()[: -len(fence)], indent))  # closing fence glued on
                break
            body.append(_unindent(line, indent))
        blocks.append(_Block(opening.group("info").lower(), "\n".join(body).strip("\n")))
    return blocks, "\n".join(prose)


def _unindent(line: str, width: int) -> str:
    cut = len(line) - len(line.lstrip(" "))
    return line[min(cut, width) :]


def _extract_code(task: Task, text: str, view: _View, echoes: set[str]) -> tuple[str | None, str]:
    """The replacement code in `text`, and the prose around it (echoes of the prompt dropped)."""
    language = task.language
    blocks, prose = _fenced_blocks(text)
    if blocks:
        return _pick_block(task, blocks, view), _explanation(prose, echoes)
    lines = text.split("\n")
    code_language = grammar(language) is not None

    def is_prose(line: str) -> bool:
        if _loose(line) in echoes:
            return True
        return _is_prose(line) if code_language else bool(_LEAD_IN.match(line.strip()))

    start, end = 0, len(lines)
    while start < end and (not lines[start].strip() or is_prose(lines[start])):
        start += 1
    while end > start and (not lines[end - 1].strip() or is_prose(lines[end - 1])):
        end -= 1
    explanation = "\n".join(lines[:start] + lines[end:])
    return "\n".join(lines[start:end]), _explanation(explanation, echoes)


def _pick_block(task: Task, blocks: list[_Block], view: _View) -> str | None:
    """The first block that looks like code and is not a copy of what the prompt showed.

    A model repeating the prompt repeats its blocks (the lines before, the selection, the lines
    after); its own version comes after them. A copy of the selection is taken only when nothing
    else is offered (validation then rejects it as unchanged); a copy of the lines around it never.
    """

    def key(body: str) -> str:
        return _normalised(textwrap.dedent("\n".join(_strip_line_numbers(body.split("\n"), "", None))))

    shown = {key("\n".join(line for _, line in part)) for part in (view.before, view.after)} - {""}
    selection = key(task.selection_text())
    bodies = [block.body for block in blocks if block.body.strip()]
    code_like = [body for body in bodies if _looks_like_code(body, task.language)] or bodies
    fresh = [body for body in code_like if key(body) not in shown]
    changed = [body for body in fresh if key(body) != selection]
    for group in (changed, fresh):
        if group:
            return group[0]
    return None


def _explanation(prose: str, echoes: set[str]) -> str:
    kept = [line for line in prose.split("\n") if _loose(line) not in echoes]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if len(text) > 600:
        text = text[:597].rstrip() + "..."
    return text


def _looks_like_code(body: str, language: str) -> bool:
    loaded = grammar(language)
    if loaded is None:
        return True  # markdown or plain text: prose is the content
    if not loaded.parser().parse(textwrap.dedent(body).encode()).root_node.has_error:
        return True
    lines = [line for line in body.split("\n") if line.strip()]
    prose = sum(1 for line in lines if _is_prose(line))
    return prose * 2 < len(lines)


def _is_prose(line: str) -> bool:
    """A line of English rather than code (heuristic, used only at the edges of an unfenced answer)."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "//", "/*", "*", "--", "<!--", '"""', "'''", "@")):
        return False
    first = re.match(r"[A-Za-z_]\w*", stripped)
    if first and first.group() in _KEYWORDS and not _LEAD_IN.match(stripped):
        return False
    bare = re.sub(r"`[^`]*`", "x", stripped)  # `names` quoted in prose are not code
    if _CODE_MARKS.search(bare) and not re.search(r"[.!:]$", bare):
        return False
    if _LEAD_IN.match(stripped):
        return True
    words = re.findall(r"[A-Za-z']+", bare)
    return len(words) >= 3 and not _CODE_MARKS.search(bare)


def _strip_line_numbers(lines: list[str], selection: str, rng: TextRange | None) -> list[str]:
    """Lines without the ``12 | `` / ``12: `` prefixes a model copied from the prompt.

    Stripped when the numbers increase, start near the selection (when `rng` is given), and either
    every non-blank line has one or the first does and most do (lines the model added carry none);
    never when the selection itself looks numbered.
    """
    nonblank = [line for line in lines if line.strip()]
    selection_lines = [line for line in selection.split("\n") if line.strip()]
    if not nonblank or (selection_lines and all(_NUMBER_PREFIX.match(line) for line in selection_lines)):
        return lines
    matches = [_NUMBER_PREFIX.match(line) for line in nonblank]
    numbers = [int(match.group(1)) for match in matches if match]
    if not numbers or matches[0] is None:
        return lines
    if any(a > b for a, b in itertools.pairwise(numbers)):
        return lines
    if len(numbers) < len(nonblank) and len(numbers) * 2 < len(nonblank):
        return lines
    if rng is not None and not rng.start_line - CONTEXT_LINES <= numbers[0] <= rng.end_line + CONTEXT_LINES:
        return lines
    out = []
    for line in lines:
        match = _NUMBER_PREFIX.match(line)
        out.append(line[match.end() :] if match else line)
    return out


def _trim_echoed_context(lines: list[str], view: _View) -> list[str]:
    """Drop the lines before/after the selection that the model copied around its code.

    Taken off: the lines shown before the selection when the answer starts with (the end of) them
    or holds all of them, the lines shown after it when the answer ends with (the start of) them or
    holds all of them, and a lone closer (``}``) copied from around the selection that leaves more
    brackets closed than opened.
    """
    selection = [line.strip() for _, line in view.selection if line.strip()]
    before = [line.strip() for _, line in view.before if line.strip()]
    after = [line.strip() for _, line in view.after if line.strip()]
    rows = [i for i, line in enumerate(lines) if line.strip()]
    if not rows or not selection:
        return lines
    texts = [lines[i].strip() for i in rows]

    def substantial(block: list[str]) -> bool:
        return any(len(re.sub(r"\W", "", line)) >= 4 for line in block)

    def find(block: list[str], positions: range) -> int | None:
        for at in positions:
            if texts[at : at + len(block)] == block:
                return at
        return None

    head, tail = 0, len(texts)  # the kept nonblank lines: texts[head:tail]
    for k in range(len(before), 0, -1):
        block = before[-k:]
        if not substantial(block) or block == selection[:k]:
            continue
        anywhere = range(0, len(texts) - k) if k == len(before) else range(0, 1 if len(texts) > k else 0)
        at = find(block, anywhere)
        if at is not None:
            head = at + k
            break
    for k in range(len(after), 0, -1):
        block = after[:k]
        if not substantial(block) or block == selection[-k:]:
            continue
        last_start = tail - k
        anywhere = range(head + 1, last_start + 1) if k == len(after) else range(last_start, last_start + 1)
        at = find(block, range(max(anywhere.start, head + 1), anywhere.stop))
        if at is not None:
            tail = at
            break
    deficit = _balance(selection) - _balance(texts[head:tail])
    while (
        deficit > 0 and tail - head > 1 and after and texts[tail - 1] == after[0] and _balance([after[0]]) < 0
    ):
        tail -= 1
        deficit += _balance([after[0]])
    while (
        deficit < 0
        and tail - head > 1
        and before
        and texts[head] == before[-1]
        and _balance([before[-1]]) > 0
    ):
        head += 1
        deficit += _balance([before[-1]])
    if head == 0 and tail == len(texts):
        return lines
    first = rows[head]
    last = rows[tail - 1] + 1
    return lines[first:last]


def _balance(lines: list[str]) -> int:
    """Brackets opened minus closed (a rough count: strings and comments are not told apart)."""
    text = "".join(lines)
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _indent_candidates(lines: list[str], selection: str, prefix: str) -> list[str]:
    """The replacement re-indented to the selection, most likely first.

    Models drop the selection's indentation in two ways: all lines shifted left alike, or only the
    first line flush left (the rest copied as they were). The selection's first two lines say which
    fits; validation then picks the first candidate that parses in the file. `prefix` is the text
    before the selection on its first line.
    """
    lines = [line.rstrip("\r") for line in lines]
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    # keep the blank lines the selection starts and ends with
    lead = trail = 0
    if selection.strip():
        lead = len(selection.split("\n")) - len(selection.lstrip("\n").split("\n"))
        trail = len(selection.split("\n")) - len(selection.rstrip("\n").split("\n"))
    indented_prefix = bool(prefix) and not prefix.strip()

    def finish(candidate: list[str]) -> str:
        if indented_prefix and not lead and candidate:  # the range starts after this indentation
            first = candidate[0]
            cut = len(prefix) if first.startswith(prefix) else len(_indent_of(first))
            candidate = [first[cut:], *candidate[1:]]
        return "\n" * lead + "\n".join(candidate) + "\n" * trail

    if prefix.strip():  # the selection starts mid-line: its indentation is not ours to fix
        return [finish(lines)]
    wanted = [line for line in (prefix + selection).split("\n") if line.strip()]
    nonblank = [line for line in lines if line.strip()]
    if not wanted or not nonblank:
        return [finish(lines)]
    target = _indent_of(wanted[0])
    have = _indent_of(nonblank[0])
    if have == target:
        return [finish(lines)]
    unit = "\t" if target.startswith("\t") else " "
    shift = len(target) - len(have)
    uniform: list[str] | None = None
    if shift > 0:
        uniform = [unit * shift + line if line.strip() else line for line in lines]
    elif all(len(_indent_of(line)) >= -shift for line in nonblank):
        uniform = [line[-shift:] if line.strip() else line for line in lines]
    first_index = lines.index(nonblank[0])
    first_only = [*lines[:first_index], target + nonblank[0].lstrip(" \t"), *lines[first_index + 1 :]]
    prefer_first = False
    if len(nonblank) > 1 and len(wanted) > 1:
        wanted_step = len(_indent_of(wanted[1])) - len(target)
        second = len(_indent_of(nonblank[1]))
        prefer_first = second - len(target) == wanted_step and second - len(have) != wanted_step
    ordered = [first_only, uniform] if prefer_first else [uniform, first_only]
    candidates: list[str] = []
    for candidate in [*ordered, lines]:
        if candidate is not None and finish(candidate) not in candidates:
            candidates.append(finish(candidate))
    return candidates
