"""Task kinds: what the user asked for, the selection it works on, and the edit a code kind answers with.

Kinds:

- ``ask``: a question about the codebase, answered from the retrieved context, with citations.
- ``explain``: explain a selection, a symbol (named in ``prompt``) or a whole file.
- ``refactor``: an instruction plus a selection -> replacement code for the selection.
- ``document``: the selection again with docstrings and comments added, the code itself unchanged.
- ``fix``: a diagnostic plus the code it points at -> corrected code.
- ``chat``: a conversation; earlier turns travel in ``Task.history``.

``refactor``, ``document`` and ``fix`` are the code kinds (`CODE_KINDS`): their answer becomes an
`Edit` of the selection. The prompt each kind sends is built in `swarm.prompts`, its answer is read
in `swarm.answers`, and a code answer's edit is checked in `swarm.edits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from swarm_lsp.code.languages import detect_language
from swarm_lsp.code.symbols import extract_symbols
from swarm_lsp.models.base import Message

__all__ = [
    "CODE_KINDS",
    "TASK_KINDS",
    "Edit",
    "Message",
    "Task",
    "TaskKind",
    "TextRange",
    "apply_edit",
    "line_prefix",
    "selection_around",
    "span_of",
]

TaskKind = Literal["ask", "explain", "refactor", "document", "fix", "chat"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
CODE_KINDS = frozenset({"refactor", "document", "fix"})


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

    ``instructions`` are the client's own system message (the HTTP API passes an OpenAI request's);
    they are added to the swarm's. A chat with ``grounded`` False is plain chat with the model: no
    retrieval, no workspace rules, the client's instructions as the whole system message.
    """

    kind: TaskKind
    prompt: str = ""
    path: str | None = None
    range: TextRange | None = None
    file_text: str | None = None
    diagnostic: str | None = None
    history: Sequence[Message] = ()
    conversation_id: str | None = None
    instructions: str = ""
    grounded: bool = True

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
        start, end = span_of(self.file_text, self.range)
        return self.file_text[start:end]

    def validate(self) -> None:
        """Raise ValueError, saying what is missing or wrong, when the task cannot be run."""
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; use one of {', '.join(TASK_KINDS)}")
        if not self.grounded and self.kind != "chat":
            raise ValueError(f"only a chat can be ungrounded; a {self.kind} task works on the workspace")
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


def span_of(text: str, rng: TextRange | None) -> tuple[int, int]:
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
        for symbol in extract_symbols(path, file_text)
        if symbol.kind != "variable" and symbol.start_line <= line <= symbol.end_line
    ]
    if not around:
        return TextRange(line, line)
    innermost = min(around, key=lambda symbol: symbol.end_line - symbol.start_line)
    return TextRange(innermost.start_line, innermost.end_line)


def apply_edit(file_text: str, edit: Edit) -> str:
    """`file_text` with `edit` applied; ValueError when the range no longer holds `edit.original_text`."""
    start, end = span_of(file_text, edit.range)
    if file_text[start:end] != edit.original_text:
        raise ValueError(
            f"{edit.path} changed at {edit.range.lines_phrase} since the edit was made; run the task again"
        )
    return file_text[:start] + edit.new_text + file_text[end:]


def line_prefix(file_text: str, rng: TextRange) -> str:
    """The text before the range on its first line."""
    starts = _line_starts(file_text)
    start, _ = span_of(file_text, rng)
    return file_text[starts[rng.start_line - 1] : start]
