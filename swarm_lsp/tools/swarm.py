"""Swarm tools: ask_swarm, explain_code, propose_refactor (read: they write nothing).

Each runs `Workspace.run` (retrieval, N voters, a vote, grounding) and returns the voted answer
with its agreement score and sources. propose_refactor turns the winning edit into a unified diff
for the caller to review and apply (apply_patch), and changes no file itself. Token counts stream
as progress; cancelling the call stops every voter within a token step.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.swarm.engine import SwarmProgress
from swarm_lsp.swarm.tasks import Edit, Task, TextRange, apply_edit
from swarm_lsp.tools.env import ToolEnv
from swarm_lsp.tools.fs import read_text, unified_diff
from swarm_lsp.tools.registry import Output, Plan, Progress, Refused, Tier, Tool, ToolError
from swarm_lsp.tools.sandbox import SafePath

if TYPE_CHECKING:
    from swarm_lsp.workspace import Workspace

PROGRESS_EVERY_S = 0.5


_LINE_RANGE: dict[str, Any] = {
    "start_line": {"type": "integer", "minimum": 1},
    "end_line": {"type": "integer", "minimum": 1},
}
"""The optional line range of a file, as every swarm tool takes it."""


def _voters_schema() -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": 16, "description": "voters (default: settings)"}


def _range(args: dict[str, Any], total_lines: int) -> TextRange | None:
    start, end = args.get("start_line"), args.get("end_line")
    if start is None and end is None:
        return None
    start = start or 1
    end = end or start
    if end < start:
        raise ToolError(f"end_line ({end}) is before start_line ({start})")
    if start > total_lines:
        raise ToolError(f"the file has {total_lines} lines; start_line {start} is past its end")
    return TextRange(start, min(end, total_lines))


def _file(env: ToolEnv, raw: str) -> tuple[SafePath, str, str]:
    safe = env.sandbox.resolve(raw)
    rel = env.index_rel(safe)
    if not rel:
        raise ToolError(f"{safe.shown} is not a file in the indexed workspace ({env.workspace.root})")
    text, _stamp = read_text(env, safe)
    return safe, rel, text


async def _run(env: ToolEnv, task: Task, voters: int | None, progress: Progress) -> Any:
    try:
        task.validate()
    except ValueError as error:
        raise ToolError(str(error)) from None
    await env.index_ready()
    loop = asyncio.get_running_loop()
    cancel = CancellationToken()
    last = [0.0]

    def on_progress(event: SwarmProgress) -> None:
        # Called from the generating thread: hand each update to the event loop, at most twice a second.
        now = time.monotonic()
        if event.phase == "generating" and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        message = f"{event.phase}: {event.voters} voters, {event.tokens} tokens"
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(progress(event.tokens, None, message)))

    try:
        result = await env.workspace.run(task, voters=voters, cancel=cancel, on_progress=on_progress)
    except asyncio.CancelledError:
        cancel.cancel()
        raise
    except SwarmLspError as error:
        raise ToolError(f"the swarm could not answer: {error}") from None
    await asyncio.to_thread(withhold_secrets, env, result)
    return result


def withhold_secrets(env: ToolEnv, result: Any) -> None:
    """Refuse an answer that cites a secret file or repeats a value from one.

    The index leaves secret-looking files out (the workspace adds tools.secret_files to its ignore
    rules), so the swarm's context should never hold one. This is the second line: an index built
    before a pattern was added keeps such a file until its next sync, and a model may still cite
    a secret path by name.
    """
    if env.sandbox.allow_secrets:
        return
    workspace = env.workspace
    said = result.answer + ("" if result.edit is None else result.edit.new_text)
    cited = {source.split(":")[0].split(" (")[0] for source in result.sources}
    leaked = sorted(path for path in cited if env.sandbox.is_secret(path))
    for path in workspace.indexed_paths():
        stale = env.sandbox.is_secret(path) and path not in leaked
        if stale and any(value in said for value in _secret_values(workspace, path)):
            leaked.append(path)
    if leaked:
        raise Refused(
            f"the answer drew on secret file(s) ({', '.join(sorted(leaked))}), so it was withheld; set "
            "tools.allow_secret_files = true to allow it, or ask without needing those files",
            decided_by="sandbox",
        )


def _secret_values(workspace: Workspace, path: str) -> list[str]:
    """Value-like pieces of a secret file: long enough, and with a digit or very long."""
    pieces = []
    for chunk in workspace.chunks(path):
        for piece in re.split(r"[\s=:'\",;]+", chunk.text):
            if len(piece) >= 8 and (any(c.isdigit() for c in piece) or len(piece) >= 16):
                pieces.append(piece)
    return pieces


def edit_diff(shown: str, text: str, edit: Edit) -> str:
    """The unified diff (as apply_patch takes it) of applying `edit` to `text`."""
    try:
        after = apply_edit(text, edit)
    except ValueError as error:
        raise ToolError(str(error)) from None
    return unified_diff(shown, text, after)


def _verdict(result: Any, low: str) -> str:
    verdict = f"LOW AGREEMENT: {low}" if result.low_agreement else "agreement"
    voters = f"{len(result.candidates)}/{result.voters} voters"
    return f"{verdict} {result.agreement:.2f} ({result.strategy}, {voters})"


def _answer_plan(env: ToolEnv, task: Task, voters: int | None, description: str) -> Plan:
    """A read-tier plan that runs `task` by swarm vote and returns the voted answer."""

    async def run(progress: Progress) -> Output:
        return _answer_output(await _run(env, task, voters, progress))

    return Plan(Tier.READ, description, run)


def _answer_output(result: Any, extra: dict[str, Any] | None = None) -> Output:
    lines = [result.answer.strip() or "(no answer)", "", _verdict(result, "treat this answer with care")]
    if result.sources:
        lines.append("sources: " + ", ".join(result.sources))
    if result.degraded or result.notes:
        lines.append("notes: " + "; ".join(result.notes))
    data = result.to_dict(candidates=False) | (extra or {})
    return Output("\n".join(lines), data)


# -------------------------------------------------------------------------------------- ask_swarm


def _prepare_ask_swarm(env: ToolEnv, args: dict[str, Any]) -> Plan:
    question: str = args["question"]
    voters = args.get("voters")
    path = rel = text = None
    text_range = None
    if args.get("path") is not None:
        safe, rel, text = _file(env, args["path"])
        path = safe.shown
        text_range = _range(args, len(text.splitlines()))
    elif args.get("start_line") is not None or args.get("end_line") is not None:
        raise ToolError("start_line and end_line need a path: the file the lines are in")
    task = Task(
        kind="ask", prompt=question, path=rel, range=text_range, file_text=text if text_range else None
    )

    where = f" about {path}" if path else ""
    return _answer_plan(env, task, voters, f"ask the swarm{where}: {question[:200]}")


ASK_SWARM = Tool(
    name="ask_swarm",
    tier=Tier.READ,
    title="Ask the swarm",
    description=(
        "Answer a question about the codebase by a vote of several local model voters over the retrieved "
        "code: the voted answer, an agreement score (0-1; under 0.5 is low) and the sources (path:lines). "
        "Optionally about a file or a line range of it."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 1},
            "path": {"type": "string", "description": "a file the question is about"},
            **_LINE_RANGE,
            "voters": _voters_schema(),
        },
        "required": ["question"],
        "additionalProperties": False,
    },
    prepare=_prepare_ask_swarm,
)


# ------------------------------------------------------------------------------------ explain_code


def _prepare_explain_code(env: ToolEnv, args: dict[str, Any]) -> Plan:
    if args.get("path") is None and not args.get("symbol"):
        raise ToolError("explain_code needs a path (and optionally lines) or a symbol name")
    voters = args.get("voters")
    rel = text = None
    text_range = None
    shown = args.get("symbol", "")
    if args.get("path") is not None:
        safe, rel, text = _file(env, args["path"])
        text_range = _range(args, len(text.splitlines()))
        shown = safe.shown + (f":{text_range.lines_label}" if text_range else "")
    task = Task(kind="explain", prompt=args.get("symbol", ""), path=rel, range=text_range, file_text=text)

    return _answer_plan(env, task, voters, f"explain {shown}")


EXPLAIN_CODE = Tool(
    name="explain_code",
    tier=Tier.READ,
    title="Explain code",
    description=(
        "Explain a file, a line range of it, or a symbol (by name), answered by a vote of local model "
        "voters, with agreement and sources."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            **_LINE_RANGE,
            "symbol": {"type": "string", "description": "a symbol to explain (with or without a path)"},
            "voters": _voters_schema(),
        },
        "additionalProperties": False,
    },
    prepare=_prepare_explain_code,
)


# -------------------------------------------------------------------------------- propose_refactor


def _prepare_propose_refactor(env: ToolEnv, args: dict[str, Any]) -> Plan:
    if "path" not in args:
        from swarm_lsp.tools.codebase_refactor import prepare_codebase_refactor

        return prepare_codebase_refactor(env, args)
    if "start_line" not in args or "end_line" not in args:
        raise ToolError(
            "with a path, give start_line and end_line; without one the whole codebase is refactored"
        )
    safe, rel, text = _file(env, args["path"])
    text_range = _range(args, len(text.splitlines()))
    assert text_range is not None  # start_line and end_line are required by the schema
    task = Task(kind="refactor", prompt=args["instruction"], path=rel, range=text_range, file_text=text)
    voters = args.get("voters")

    async def run(progress: Progress) -> Output:
        result = await _run(env, task, voters, progress)
        if result.edit is None:
            notes = (
                "; ".join(result.notes) or "every candidate was invalid (did not parse or changed nothing)"
            )
            return Output(
                f"no valid refactoring of {safe.shown}:{text_range.lines_label} came out of the vote "
                f"({notes}); try a more specific instruction or a smaller range",
                result.to_dict(candidates=False) | {"diff": None},
                is_error=True,
            )
        diff = edit_diff(safe.shown, text, result.edit)
        summary = _verdict(result, "review with care")
        body = f"{diff}\n{summary}\nNothing was written; apply the diff with apply_patch if you want it."
        return Output(body, result.to_dict(candidates=False) | {"diff": diff})

    return Plan(Tier.READ, f"propose a refactoring of {safe.shown}:{text_range.lines_label}", run)


PROPOSE_REFACTOR = Tool(
    name="propose_refactor",
    tier=Tier.READ,
    escalates_to=Tier.WRITE,
    title="Propose a refactoring",
    description=(
        "With path and lines: rewrite that range as instructed, by a vote of local model voters (invalid "
        "code never wins), and return the change as a unified diff with its agreement score; writes "
        "nothing. Without a path: refactor across the codebase (a rename finds every reference and is "
        "made mechanically; other instructions are voted per definition), check the whole change "
        "(parse, import, the workspace's tests in a copy) and return one diff over every file, the "
        "references found and the check; with apply: true, write it all-or-nothing (write tier)."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "a file; leave out to refactor the whole codebase"},
            **_LINE_RANGE,
            "instruction": {
                "type": "string",
                "minLength": 1,
                "description": "what to change, e.g. 'rename fetch_user to load_user'",
            },
            "voters": _voters_schema(),
            "max_references": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "description": "codebase mode: references found and changed at most",
            },
            "apply": {"type": "boolean", "description": "codebase mode: write the change (all-or-nothing)"},
        },
        "required": ["instruction"],
        "additionalProperties": False,
    },
    prepare=_prepare_propose_refactor,
)

SWARM_TOOLS = [ASK_SWARM, EXPLAIN_CODE, PROPOSE_REFACTOR]
