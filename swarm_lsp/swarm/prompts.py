"""The prompt each task kind sends.

Layout (`build_messages`): one system message with the kind's role, a few rules and the retrieved
context (each piece headed ``--- path:start-end``), then, for chat, the earlier turns as
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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_lsp.code.languages import detect_language
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.models.base import Message
from swarm_lsp.swarm.tasks import CODE_KINDS, Task, span_of

__all__ = [
    "CONTEXT_LINES",
    "PLAIN_SYSTEM",
    "PromptView",
    "build_messages",
    "max_tokens_for",
    "stop_strings",
    "user_text",
]

CONTEXT_LINES = 3
"""Lines shown before and after a code kind's selection, so the model sees the indentation."""
FILE_LINES_SHOWN = 200
"""An ``explain`` of a whole file shows at most this many of its lines (the rest is in the context)."""
MAX_CODE_TOKENS = 4096
"""`max_tokens_for` never asks more than this (or the caller's default, when that is larger)."""

PLAIN_SYSTEM = "You are a helpful assistant."
"""The system message of an ungrounded chat whose client sent none."""

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
    if task.grounded:
        system = _system_text(task.kind, context, context_citations)
        if task.instructions.strip():
            system += f"\n\nInstructions from the user's tool:\n{task.instructions.strip()}"
    else:
        system = task.instructions.strip() or PLAIN_SYSTEM
    messages = [Message("system", system)]
    if task.kind == "chat":
        messages.extend(Message(m.role, m.content) for m in task.history if m.role in ("user", "assistant"))
    messages.append(Message("user", user_text(task, extra_context)))
    return messages


def stop_strings(task: Task) -> list[str]:
    """Strings that end generation: chat-template tokens, and for text answers an invented next turn."""
    stops = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"]
    if task.kind not in CODE_KINDS:
        stops += ["\nUser:", "\nHuman:", "\nQuestion:", "\nAnswer:"]  # the last two: base models' turns
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


def user_text(task: Task, extra_context: str = "") -> str:
    """The user message that carries `task` (the last of `build_messages`)."""
    view = PromptView.of(task)
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


def _explain_parts(task: Task, view: PromptView | None) -> list[str]:
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


def _selection_parts(task: Task, view: PromptView | None) -> list[str]:
    if view is not None and task.range is not None:
        return [f"Selected {task.range.lines_phrase} of {task.path}:\n{view.block(view.selection)}"]
    if task.path is not None:
        return [f"The user is looking at {task.path}."]
    return []


@dataclass(frozen=True)
class PromptView:
    """The selection and its surroundings as numbered lines, for the prompt."""

    tag: str
    fence: str
    width: int
    file_lines: list[str]
    selection: list[tuple[int, str]]
    before: list[tuple[int, str]]
    after: list[tuple[int, str]]

    @classmethod
    def of(cls, task: Task) -> PromptView | None:
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
            start, end = span_of(text, rng)
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
