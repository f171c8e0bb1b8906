"""propose_refactor across the codebase: one instruction, every reference, the whole change checked.

Called by propose_refactor when it gets no `path`. It runs `codebase.refactor_codebase` (a rename is
mechanical and exact; anything else is voted piece by piece), then returns the change as one unified
diff over every file, with the blast radius and the check. It is a write-tier call even without
`apply`: its check runs the workspace's own code (imports and tests) in a copy. With `apply`, the
diff is written all-or-nothing, as apply_patch writes it.
"""

from __future__ import annotations

from typing import Any

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.codebase import refactor_codebase
from swarm_lsp.renaming import changed_texts
from swarm_lsp.tools.env import ToolEnv
from swarm_lsp.tools.fs import prepare_apply_patch, read_text, unified_diff
from swarm_lsp.tools.registry import Output, Plan, Progress, Tier, ToolError


def prepare_codebase_refactor(env: ToolEnv, args: dict[str, Any]) -> Plan:
    instruction = args["instruction"]
    apply = bool(args.get("apply", False))
    limit = args.get("max_references")

    def file_text(rel: str) -> str | None:
        try:
            return read_text(env, env.sandbox.resolve(rel))[0]
        except (ToolError, OSError):
            return None

    async def run(progress: Progress) -> Output:
        await env.index_ready()
        try:
            result = await refactor_codebase(
                env.workspace,
                instruction,
                file_text,
                max_references=limit,
                voters=args.get("voters"),
            )
        except (SwarmLspError, ValueError) as error:
            raise ToolError(f"the refactor could not be planned: {error}") from None
        data = result.to_dict()
        if not result.edits:
            why = "the change fails its check and was withheld" if result.withheld else "no edit came out"
            return Output(
                f"{result.summary}\n\nNothing to apply: {why}.", data | {"diff": None}, is_error=True
            )
        try:
            texts = changed_texts(result.edits, file_text)
        except ValueError as error:
            raise ToolError(str(error)) from None
        diff = "".join(
            unified_diff(path, file_text(path) or "", text) for path, text in sorted(texts.items())
        )
        data |= {"diff": diff}
        if not apply:
            tail = "Nothing was written; call again with apply: true, or apply the diff with apply_patch."
            return Output(f"{diff}\n{result.summary}\n\n{tail}", data)
        plan = prepare_apply_patch(env, {"patch": diff})
        written = await plan.run(progress)
        if written.is_error:
            return written
        return Output(f"{written.text}\n{result.summary}", data | {"applied": True})

    action = "apply" if apply else "propose"
    summary = (
        f"{action} a codebase-wide refactor: {instruction!r} (its check runs the workspace's tests in a copy)"
    )
    return Plan(Tier.WRITE, summary, run)
