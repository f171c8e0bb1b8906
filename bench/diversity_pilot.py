"""Which per-voter prompt variant helps the vote? bench/swarm_quality.py with other variant builders.

    python bench/diversity_pilot.py DESIGN [swarm_quality options, e.g. --models bundled --questions 10]

DESIGN is what voters 1-4 read at the end of the shared prompt (voter 0 always reads the prompt as
built; the context in the system message is never changed):

  order         the order in which to check the top 4 context pieces (their headers), rotated by one
                per voter, then the question and a hint per voter: what `swarm.diversity` ships
                (swarm/prompt_variants.py);
  hints         the question and a hint per voter;
  piece-hint    one piece of the context shown again (a different top piece per voter, cut to 160
                tokens), then the question and a hint;
  piece         the same, without the hint;
  top-piece     the top piece shown again for every voter, then the question;
  beyond        a piece beyond the shared ones (retrieval with a larger budget; a different one per
                voter, cut to 160 tokens), then the question.

Runs swarm_quality's `--diversity on` with the builder swapped in; compare with swarm_quality's
`--diversity off` on the same questions (voter 0 and the seeds are the same). Prints markdown.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import swarm_quality

from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.models.base import Message
from swarm_lsp.swarm.context import ContextPack, Focus
from swarm_lsp.swarm.prompt_variants import HINTS, context_pieces, voter_variants
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.workspace import Workspace

VariantBuilder = Callable[[Task, Sequence[Message], str, int], dict[int, list[Message]]]
DESIGNS = ("order", "hints", "piece-hint", "piece", "top-piece", "beyond")
PIECE_TOKENS = 160
CONTEXT_TOKENS = 1500
"""swarm_quality's default `--context`: the shared pack `beyond` looks past."""

_last_workspace: list[Workspace] = []
_context_for = Workspace.context_for


def _remember_workspace(self: Workspace, query: str, budget: int, focus: Focus | None = None) -> ContextPack:
    _last_workspace[:] = [self]
    return _context_for(self, query, budget, focus)


def shorten(piece: str, token_budget: int) -> str:
    """`piece` within about `token_budget` tokens: its first lines, an open fence closed again."""
    if estimate_tokens(piece) <= token_budget:
        return piece
    kept: list[str] = []
    used = 0
    for line in piece.split("\n"):
        used += estimate_tokens(line + "\n")
        if used > token_budget and kept:
            break
        kept.append(line)
    fences = sum(1 for line in kept if line.startswith("```"))
    return "\n".join([*kept, "...", *(["```"] if fences % 2 else [])])


def beyond_pieces(question: str, voters: int) -> list[str]:
    workspace = _last_workspace[0]
    shared = _context_for(workspace, question, CONTEXT_TOKENS)
    larger = _context_for(workspace, question, CONTEXT_TOKENS + (voters - 1) * PIECE_TOKENS * 2)
    have = set(shared.citations)
    extra = [piece for piece in larger.pieces if piece.citation not in have]
    return [context_pieces(ContextPack(question, [piece]).render())[0] for piece in extra]


def builder(design: str) -> VariantBuilder:
    def variants(
        task: Task, messages: Sequence[Message], context: str, voters: int
    ) -> dict[int, list[Message]]:
        if design == "order":
            return voter_variants(task, messages, context, voters)
        *shared, last = messages
        pieces = context_pieces(context)
        extra = beyond_pieces(task.prompt, voters) if design == "beyond" else []
        built = {}
        for voter in range(1, voters):
            parts = []
            if design in ("piece-hint", "piece") and pieces:
                shown = pieces[(voter - 1) % len(pieces)]
                parts.append(
                    f"Look closely at this piece of the context:\n\n--- {shorten(shown, PIECE_TOKENS)}"
                )
            elif design == "top-piece" and pieces:
                parts.append(
                    f"Look closely at this piece of the context:\n\n--- {shorten(pieces[0], PIECE_TOKENS)}"
                )
            elif design == "beyond" and extra:
                shown = extra[(voter - 1) % len(extra)]
                parts.append(f"More context:\n\n--- {shorten(shown, PIECE_TOKENS)}")
            hinted = design in ("hints", "piece-hint")
            parts.append(f"{last.content}\n{HINTS[(voter - 1) % len(HINTS)]}" if hinted else last.content)
            built[voter] = [*shared, Message("user", "\n\n".join(parts))]
        return built

    return variants


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in DESIGNS:
        raise SystemExit(f"usage: diversity_pilot.py {{{','.join(DESIGNS)}}} [swarm_quality options]")
    design = sys.argv.pop(1)
    Workspace.context_for = _remember_workspace  # type: ignore[method-assign]
    swarm_quality.voter_variants = builder(design)
    sys.argv += ["--diversity", "on"]
    print(f"Design: {design}\n")
    return asyncio.run(swarm_quality.main())


if __name__ == "__main__":
    sys.exit(main())
