"""Per-voter variants of a question's prompt, so that voters err differently and the vote has signal.

Sampling alone makes voters of a small model repeat one mistake: they read the same prompt and most
follow the same salient piece of context. Here each voter after the first reads the same system
message (role, rules, the whole context) and history, and a last user message of its own:

- the order in which to check the context: the top `ORDER_PIECES` pieces by their headers, rotated
  by one per voter (voter 1 from the top piece, voter 2 from the second, ...), so each voter starts
  from another candidate place. The context itself is not reordered: it stays in the shared prefix;
- the task as built, then a hint worded differently per voter (`HINTS`).

Voter 0 reads the prompt as built: it is the greedy single best guess, the prompt a chat stores,
and the one the backend's prompt cache keeps. Only the last message differs, so the llama.cpp
backend evaluates the shared part once and each voter's own tail (the last message, about 100-150
tokens) in one batch (models/llamacpp/variants.py); other backends answer the shared prompt.
Used for the text questions that the `grounded` vote checks (ask, and chat over the workspace).
Measured against other variants (a piece shown again, pieces beyond the shared ones, hints alone):
docs/benchmarks.md, "Swarm: quality".
"""

from __future__ import annotations

from collections.abc import Sequence

from swarm_lsp.models.base import Message
from swarm_lsp.swarm.context import PIECE_SEPARATOR
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.swarm.voting import GROUNDED_KINDS

ORDER_PIECES = 4
"""How many of the top context pieces a voter is told to check, in its own order."""
HINTS = (
    "Name the function, class or file exactly as the context writes it.",
    "Before you answer, check which piece of the context really does what is asked.",
    "Start with the name of the code that answers the question, then give its path:start-end.",
    "If several pieces look related, prefer the one that defines it over one that only uses it.",
)


def voter_variants(
    task: Task, messages: Sequence[Message], context: str, voters: int
) -> dict[int, list[Message]]:
    """The messages of voters 1 .. voters-1, by voter index; empty for tasks that keep one prompt."""
    if task.kind not in GROUNDED_KINDS or not task.grounded or voters < 2 or not messages:
        return {}
    *shared, last = messages
    if last.role != "user":
        return {}
    headers = [piece.split("\n", 1)[0] for piece in context_pieces(context)[:ORDER_PIECES]]
    variants: dict[int, list[Message]] = {}
    for voter in range(1, voters):
        parts = []
        if headers:
            first = (voter - 1) % len(headers)
            order = headers[first:] + headers[:first]
            parts.append("The context pieces, in the order to check them: " + "; ".join(order))
        parts.append(f"{last.content}\n{HINTS[(voter - 1) % len(HINTS)]}")
        variants[voter] = [*shared, Message("user", "\n\n".join(parts))]
    return variants


def context_pieces(context: str) -> list[str]:
    """The pieces of a rendered context, in rank order, each without its leading `--- `."""
    text = context.strip()
    if not text.startswith("--- "):
        return []
    return [piece.strip() for piece in text.removeprefix("--- ").split(PIECE_SEPARATOR) if piece.strip()]
