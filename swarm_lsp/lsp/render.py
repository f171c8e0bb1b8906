"""Results for the editor: markdown answers with their agreement and sources, short messages,
command results, and the core's edits as LSP workspace edits."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lsprotocol import types

from swarm_lsp.codebase import CodebaseResult
from swarm_lsp.lsp.documents import Document
from swarm_lsp.lsp.session import Target
from swarm_lsp.swarm.runner import SwarmResult
from swarm_lsp.swarm.tasks import Edit, Task, apply_edit

ANSWERS_KEPT = 50
"""Answer documents kept per workspace; older ones are removed."""


TITLES = {
    "explain": "Explain",
    "refactor": "Refactor",
    "document": "Add docstring",
    "fix": "Fix",
    "ask": "Ask",
    "chat": "Chat",
}
"""The task kinds as the editor shows them."""


def verdict(agreement: float, low: bool) -> str:
    if low:
        return f"LOW AGREEMENT ({agreement:.2f}): treat this answer with care"
    return f"agreement {agreement:.2f}"


def footer(result: SwarmResult, links: SourceLinks | None = None) -> str:
    """Agreement, how it was reached, sources and notes, as markdown; with `links`, each source is a
    link to its file and first line."""
    finished = len(result.candidates)
    how = f"{result.strategy}, {finished}/{result.voters} voters, {result.model}"
    lines = [f"**{verdict(result.agreement, result.low_agreement)}** ({how})"]
    if result.sources:
        shown = (links.markdown(source) if links else f"`{source}`" for source in result.sources)
        lines.append("Sources: " + ", ".join(shown))
    if result.notes:
        lines.append("Notes: " + "; ".join(result.notes))
    return "\n\n".join(lines)


@dataclass(frozen=True)
class SourceLinks:
    """Sources (`pkg/util.py:10-14`, `README.md (outline)`, relative to the workspace `root`) as
    links from the answer documents in `answers`: relative paths with a `#L10` line fragment, which
    markdown previews open at the line (they refuse `file:` links)."""

    root: Path
    answers: Path

    def markdown(self, source: str) -> str:
        match = re.fullmatch(r"(.+?)(?::(\d+)(?:-\d+)?| \([^()]*\))?", source)
        if match is None:
            return f"`{source}`"
        path = Path(os.path.relpath(self.root / match.group(1), self.answers)).as_posix()
        line = f"#L{match.group(2)}" if match.group(2) else ""
        return f"[`{source}`]({quote(path)}{line})"


def answers_dir(folder: Path) -> Path:
    """Where a workspace's answer documents go (its data folder's `answers`)."""
    return folder / "answers"


def answer_markdown(title: str, result: SwarmResult, links: SourceLinks | None = None) -> str:
    body = result.answer.strip() or "_(no answer)_"
    return f"# {title}\n\n{body}\n\n---\n\n{footer(result, links)}\n"


def codebase_markdown(result: CodebaseResult) -> str:
    lines = [
        "# Refactor across the codebase",
        "",
        result.summary,
        "",
        "---",
        "",
        f"**{verdict(result.agreement, result.low_agreement)}** (lowest among the changed pieces)"
        if result.rename is None
        else "**Mechanical rename**: exact edits, no vote",
    ]
    if result.sources:
        lines += ["", "Sources: " + ", ".join(f"`{source}`" for source in result.sources)]
    return "\n".join(lines) + "\n"


def edit_message(title: str, result: SwarmResult, applied: bool | None, refused: str = "") -> str:
    """One line for window/showMessage after a code edit. `applied` None: the edit went back in a
    resolved code action, for the editor to apply."""
    if refused:
        return f"{title}: not applied: {refused}"
    if result.edit is None:
        reasons = sorted({c.invalid_reason for c in result.candidates if not c.valid and c.invalid_reason})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return f"{title}: no valid change was proposed, nothing was applied{why}"
    if applied is None:
        state = "proposed"
    else:
        state = "applied" if applied else "not applied (the editor refused the edit)"
    sources = f"; sources {', '.join(result.sources[:3])}" if result.sources else ""
    return f"{title}: {state}, {verdict(result.agreement, result.low_agreement)}{sources}"


def payload(result: SwarmResult, **extra: Any) -> dict[str, Any]:
    """A command's result: the core's result (without candidates) plus what the door did."""
    return {**result.to_dict(candidates=False), **extra}


# ------------------------------------------------------------------------------------ answer files


def write_answer(folder: Path, name: str, markdown: str, *, append: bool = False) -> Path:
    """Write (or append to) an answer document under the workspace data folder; keep the newest."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(name)}.md"
    if append and path.exists():
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n" + markdown)
    else:
        path.write_text(markdown, encoding="utf-8")
    answers = sorted(folder.glob("*.md"), key=lambda item: item.stat().st_mtime)
    for old in answers[:-ANSWERS_KEPT]:
        old.unlink(missing_ok=True)
    return path


def answer_name(kind: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}-{kind}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:100] or "answer"


# ------------------------------------------------------------------------------------------- edits


class StaleEdit(ValueError):
    """An edit whose range no longer holds the text it was made from."""


def workspace_edit(
    edits: Sequence[Edit],
    document_of: Callable[[str], Document | None],
    *,
    versioned: bool,
) -> types.WorkspaceEdit:
    """The core's edits as one LSP workspace edit, on each file's current text.

    Every edit is checked against that text first: one that no longer matches (the user typed
    there meanwhile) raises StaleEdit and nothing is sent. With `versioned`, open buffers are
    named with their version, so the editor also refuses the edit if it changes before applying.
    """
    by_path: dict[str, list[Edit]] = {}
    for edit in edits:
        by_path.setdefault(edit.path, []).append(edit)
    changes: dict[str, list[types.TextEdit]] = {}
    document_changes: list[types.TextDocumentEdit] = []
    for path, file_edits in by_path.items():
        document = document_of(path)
        if document is None:
            raise StaleEdit(f"{path} can no longer be read")
        text_edits = []
        for edit in file_edits:
            try:
                apply_edit(document.text, edit)
            except ValueError as error:
                raise StaleEdit(str(error)) from None
            text_edits.append(types.TextEdit(range=document.lsp_range(edit.range), new_text=edit.new_text))
        changes[document.uri] = text_edits
        identifier = types.OptionalVersionedTextDocumentIdentifier(uri=document.uri, version=document.version)
        document_changes.append(types.TextDocumentEdit(text_document=identifier, edits=text_edits))
    if versioned:
        return types.WorkspaceEdit(document_changes=document_changes)
    return types.WorkspaceEdit(changes=changes)


def answer_title(task: Task) -> str:
    if task.kind in ("ask", "chat") or task.path is None:
        return task.prompt.strip().split("\n")[0][:100] or TITLES[task.kind]
    where = task.path if task.range is None else f"{task.path}:{task.range.lines_label}"
    return f"{TITLES[task.kind]} {where}"


def target_json(task: Task, target: Target | None) -> dict[str, Any] | None:
    """Where the task pointed, in the client's units, and the text it covered."""
    if target is None:
        return None
    data: dict[str, Any] = {"uri": target.uri, "path": target.path, "version": target.document.version}
    if task.range is not None:
        rng = target.document.lsp_range(task.range)
        data["range"] = {
            "start": {"line": rng.start.line, "character": rng.start.character},
            "end": {"line": rng.end.line, "character": rng.end.character},
        }
        data["text"] = task.selection_text()
    return data
