"""Codebase-wide requests: explain the codebase, and one refactor instruction across many files.

`refactor_codebase` finds the whole blast radius first, then edits, then checks the change as one:

- **A rename** ("rename fetch_user to load_user") finds the definitions in the index's symbols and
  every reference in every indexed file (`blast_radius.py`). It renames the certain sites
  mechanically (no model call, exact) and lists the uncertain ones.
- **Any other instruction** searches the index for the code it is about and keeps the best
  definition-sized pieces. That is at most `max_targets`, never two that overlap, each checked
  against the file's current text so a stale index cannot aim an edit at the wrong lines. It runs
  one ordinary ``refactor`` task per piece through `Workspace.run`, and lists the blast radius of
  every changed definition (the call sites to review).
- **The edits together** are checked before they are offered (`change_check.py`, `[refactor] check`):
  every touched file parses, the changed Python modules still import, and the tests pass in a copy of
  the workspace. A change that breaks them is offered with a warning, or withheld (`on_broken`).

The valid edits form one result that the front door applies as a single multi-file edit, with a
summary of what was changed, what was not and why.

`explain_codebase_task` is an ``ask`` whose prompt carries the repo map (the most central files by
reference rank, with their main definitions) after the question, so the answer can name the parts
and retrieval, which searches with the prompt, brings in the code of those central files even for
a question whose own words match no code ("how is this organised?").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from swarm_lsp.basics import CancellationToken
from swarm_lsp.blast_radius import BlastRadius, find_blast_radius
from swarm_lsp.change_check import CheckReport, check_change
from swarm_lsp.renaming import Rename, RenameError, changed_texts, parse_rename, rename_edits
from swarm_lsp.swarm.engine import ProgressCallback
from swarm_lsp.swarm.runner import LOW_AGREEMENT, SwarmResult
from swarm_lsp.swarm.tasks import Edit, Task, TextRange

if TYPE_CHECKING:
    from swarm_lsp.workspace import Workspace

DEFAULT_CODEBASE_QUESTION = (
    "Explain how this codebase is organised: its purpose, its main parts, and how they fit together."
)
MAX_TARGETS = 3
"""Pieces refactored by default: each one is a full swarm run."""
SEARCH_FACTOR = 4
"""Search asks for this many hits per wanted target, since some are skipped."""
REPO_MAP_TOKENS = 300
"""The repo map's share of an explain-the-codebase prompt."""
SKIPPED_KINDS = frozenset({"class"})
"""Chunk kinds not refactored whole: a class chunk is its collapsed outline, not its text."""

FileText = Callable[[str], "str | None"]
"""The current text of a workspace-relative path (the editor's buffer when open), None if unreadable."""


@dataclass(frozen=True)
class Target:
    path: str
    range: TextRange
    symbol: str | None
    score: float

    @property
    def citation(self) -> str:
        return f"{self.path}:{self.range.start_line}-{self.range.end_line}"


@dataclass
class TargetOutcome:
    target: Target
    edit: Edit | None
    agreement: float
    note: str
    """Why there is no edit (no valid candidate, an error); empty when there is one."""
    answer: str = ""


@dataclass
class CodebaseResult:
    instruction: str
    edits: list[Edit]
    outcomes: list[TargetOutcome]
    skipped: list[str] = field(default_factory=list)
    """Search hits not refactored, with the reason (overlap, stale index, unreadable)."""
    sources: list[str] = field(default_factory=list)
    radius: list[BlastRadius] = field(default_factory=list)
    """What the change touches: each renamed or changed definition with every reference found."""
    rename: Rename | None = None
    """Set when the instruction was a rename, made mechanically."""
    check: CheckReport | None = None
    withheld: list[Edit] = field(default_factory=list)
    """Edits not offered because the change failed its check (`refactor.on_broken = "refuse"`)."""

    @property
    def agreement(self) -> float:
        """The lowest agreement among the pieces that produced an edit (0 when none did; 1 for a
        mechanical rename, which no vote decided)."""
        scores = [outcome.agreement for outcome in self.outcomes if outcome.edit is not None]
        if self.rename is not None and self.edits:
            scores.append(1.0)
        return min(scores) if scores else 0.0

    @property
    def low_agreement(self) -> bool:
        return self.agreement < LOW_AGREEMENT

    @property
    def summary(self) -> str:
        """Markdown: the instruction, then one line per piece, then what was skipped."""
        lines = [f"Instruction: {self.instruction}", ""]
        for radius in self.radius:
            lines.append(f"Blast radius: {radius.summary()}.")
            lines += [f"- {site.citation}: {site.line_text.strip()[:100]}" for site in radius.certain[:20]]
            if len(radius.certain) > 20:
                lines.append(f"- ... and {len(radius.certain) - 20} more")
            if radius.uncertain:
                lines.append(f"Not changed, to review ({len(radius.uncertain)}, meaning unsure):")
                lines += [f"- {site.citation}: {site.why}" for site in radius.uncertain[:20]]
            lines.append("")
        if self.rename is not None:
            lines.append(f"Renamed {self.rename.old} to {self.rename.new} mechanically (no model call).")
        elif not self.outcomes:
            lines.append("The search found no code to change for this instruction.")
        for outcome in self.outcomes:
            where = outcome.target.citation + (f" ({outcome.target.symbol})" if outcome.target.symbol else "")
            if outcome.edit is not None:
                lines.append(f"- {where}: changed (agreement {outcome.agreement:.2f})")
            else:
                lines.append(f"- {where}: not changed: {outcome.note}")
        if self.skipped:
            lines += ["", "Skipped:"] + [f"- {reason}" for reason in self.skipped]
        changed = len({edit.path for edit in self.edits})
        lines += ["", f"{len(self.edits)} edit(s) in {changed} file(s)."]
        if self.check is not None:
            verdict = (
                "**Warning: the change " + self.check.summary() + "**"
                if self.check.broken
                else self.check.summary()
            )
            lines += ["", f"Check: {verdict}."]
            lines += [f"- {note}" for note in self.check.notes]
            if self.check.tests is not None and not self.check.tests.passed:
                lines += ["", "```", self.check.tests.output[-1500:].strip(), "```"]
        if self.withheld:
            lines.append(
                f"{len(self.withheld)} edit(s) withheld: the change fails its check (refactor.on_broken)."
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "refactorCodebase",
            "instruction": self.instruction,
            "summary": self.summary,
            "edits": [asdict(edit) for edit in self.edits],
            "targets": [
                {
                    "citation": outcome.target.citation,
                    "symbol": outcome.target.symbol,
                    "changed": outcome.edit is not None,
                    "agreement": round(outcome.agreement, 4),
                    "note": outcome.note,
                }
                for outcome in self.outcomes
            ],
            "skipped": self.skipped,
            "blast_radius": [radius.to_dict() for radius in self.radius],
            "rename": None if self.rename is None else {"from": self.rename.old, "to": self.rename.new},
            "check": None if self.check is None else self.check.to_dict(),
            "broken": self.check is not None and self.check.broken,
            "withheld": len(self.withheld),
            "agreement": round(self.agreement, 4),
            "low_agreement": self.low_agreement,
            "sources": self.sources,
        }


def plan_targets(
    workspace: Workspace, instruction: str, file_text: FileText, *, max_targets: int = MAX_TARGETS
) -> tuple[list[Target], list[str]]:
    """The pieces of code to refactor for `instruction`, best first, and the hits skipped (why)."""
    if max_targets < 1:
        raise ValueError(f"max_targets must be at least 1, got {max_targets}")
    hits = workspace.search(instruction, k=max_targets * SEARCH_FACTOR)
    chosen: list[Target] = []
    skipped: list[str] = []
    texts: dict[str, str | None] = {}
    for hit in hits:
        if len(chosen) == max_targets:
            break
        if hit.kind in SKIPPED_KINDS:
            continue
        if any(
            t.path == hit.path and t.range.start_line <= hit.end_line and hit.start_line <= t.range.end_line
            for t in chosen
        ):
            continue
        if hit.path not in texts:
            texts[hit.path] = file_text(hit.path)
        text = texts[hit.path]
        if text is None:
            skipped.append(f"{hit.citation}: the file could not be read")
            continue
        if not _still_there(text, hit.start_line, hit.end_line, hit.text):
            skipped.append(f"{hit.citation}: the index is out of date for this file; reindex and retry")
            continue
        chosen.append(Target(hit.path, TextRange(hit.start_line, hit.end_line), hit.symbol, hit.score))
    return chosen, skipped


def _still_there(text: str, start_line: int, end_line: int, indexed: str) -> bool:
    """Whether the file's lines still begin as the indexed chunk does (its first non-blank line)."""
    lines = text.split("\n")
    if end_line > len(lines):
        return False
    first = next((line.strip() for line in indexed.split("\n") if line.strip()), "")
    current = next((line.strip() for line in lines[start_line - 1 : end_line] if line.strip()), "")
    return first == current


async def refactor_codebase(
    workspace: Workspace,
    instruction: str,
    file_text: FileText,
    *,
    max_targets: int = MAX_TARGETS,
    max_references: int | None = None,
    voters: int | None = None,
    cancel: CancellationToken | None = None,
    on_progress: ProgressCallback | None = None,
    on_target: Callable[[int, int, Target], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> CodebaseResult:
    """Find what the instruction touches, edit it (mechanically for a rename, by swarm vote
    otherwise), and check the whole change.

    `on_target(number, total, target)` is called before each voted piece (1-based number);
    `on_stage(message)` as the work moves on (the blast radius found, the check running).
    """
    if not instruction.strip():
        raise ValueError("a codebase refactor needs an instruction, e.g. 'rename fetch_user to load_user'")
    settings = workspace.settings.refactor
    limit = max_references or settings.max_references
    stage = on_stage or (lambda message: None)
    rename = parse_rename(instruction)
    if rename is not None:
        result = await _rename(workspace, instruction, rename, file_text, limit, stage)
    else:
        result = await _voted(
            workspace, instruction, file_text, max_targets, voters, cancel, on_progress, on_target
        )
        for name in dict.fromkeys(o.target.symbol for o in result.outcomes if o.edit and o.target.symbol):
            radius = await asyncio.to_thread(find_blast_radius, workspace, name, file_text, limit=limit)
            result.radius.append(radius)
            stage(f"call sites to review: {radius.summary()}")
    if result.edits:
        stage(f"checking the change ({settings.check})")
        texts = changed_texts(result.edits, file_text)
        result.check = await asyncio.to_thread(
            check_change,
            workspace.root,
            texts,
            level=settings.check,
            test_command=settings.test_command,
            test_timeout=settings.test_timeout,
        )
        if result.check.broken and settings.on_broken == "refuse":
            result.withheld, result.edits = result.edits, []
    return result


async def _rename(
    workspace: Workspace,
    instruction: str,
    rename: Rename,
    file_text: FileText,
    limit: int,
    stage: Callable[[str], None],
) -> CodebaseResult:
    stage(f"finding every reference to {rename.old}")
    radius = await asyncio.to_thread(
        find_blast_radius, workspace, rename.old, file_text, qualified=rename.qualified, limit=limit
    )
    if not radius.definitions:
        raise RenameError(
            f"no definition of {rename.qualified} is in the index: check the spelling, or run "
            "`swarm-lsp index` if it was added since"
        )
    if radius.capped:
        raise RenameError(
            f"{rename.old} has more than {limit} references: raise refactor.max_references (or the "
            "request's limit) to rename them all; a partial rename would break the code"
        )
    files = ", ".join(radius.files[:5]) + (f" +{len(radius.files) - 5}" if len(radius.files) > 5 else "")
    stage(f"blast radius: {radius.summary()}; {files}")
    result = CodebaseResult(instruction=instruction, edits=rename_edits(radius, rename), outcomes=[])
    result.radius.append(radius)
    result.rename = rename
    result.sources = list(dict.fromkeys(site.citation for site in radius.sites))[:50]
    return result


async def _voted(
    workspace: Workspace,
    instruction: str,
    file_text: FileText,
    max_targets: int,
    voters: int | None,
    cancel: CancellationToken | None,
    on_progress: ProgressCallback | None,
    on_target: Callable[[int, int, Target], None] | None,
) -> CodebaseResult:
    """Today's per-piece refactor: the pieces search finds, one swarm vote each."""
    targets, skipped = await asyncio.to_thread(
        plan_targets, workspace, instruction, file_text, max_targets=max_targets
    )
    result = CodebaseResult(instruction=instruction, edits=[], outcomes=[], skipped=skipped)
    texts: dict[str, str] = {}
    for number, target in enumerate(targets, 1):
        if on_target is not None:
            on_target(number, len(targets), target)
        if target.path not in texts:
            texts[target.path] = file_text(target.path) or ""
        task = Task(
            kind="refactor",
            prompt=instruction,
            path=target.path,
            range=target.range,
            file_text=texts[target.path],
        )
        swarm = await workspace.run(task, voters=voters, cancel=cancel, on_progress=on_progress)
        result.outcomes.append(_outcome(target, swarm))
        if swarm.edit is not None:
            result.edits.append(swarm.edit)
        result.sources.extend(source for source in swarm.sources if source not in result.sources)
    return result


def _outcome(target: Target, swarm: SwarmResult) -> TargetOutcome:
    if swarm.edit is not None:
        return TargetOutcome(target, swarm.edit, swarm.agreement, "", swarm.answer)
    reasons = [c.invalid_reason for c in swarm.candidates if not c.valid and c.invalid_reason]
    note = "no candidate was valid" + (f" ({reasons[0]})" if reasons else "")
    return TargetOutcome(target, None, swarm.agreement, note, swarm.answer)


def explain_codebase_task(
    workspace: Workspace, question: str = "", *, map_tokens: int = REPO_MAP_TOKENS
) -> Task:
    """An ``ask`` about the codebase as a whole: the question (a default one when empty) and the repo map."""
    repo_map = workspace.repo_map(map_tokens)
    prompt = question.strip() or DEFAULT_CODEBASE_QUESTION
    if repo_map.strip():
        prompt += f"\n\nRepo map (the most central files and their main definitions):\n{repo_map}"
    return Task(kind="ask", prompt=prompt)
