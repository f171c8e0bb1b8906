"""Chat messages as one plain-text prompt, for models without a chat template (base models)."""

from __future__ import annotations

from collections.abc import Sequence

from swarm_lsp.models.base import Message


def completion_prompt(messages: Sequence[Message]) -> str:
    """Messages as plain text for a model without a chat template (a base model such as Gemma 3
    270M): the system text, then each turn as "Question:" / "Answer:", ending where the answer
    starts. A base model continues it; chat-template tokens would be noise to it."""
    parts = [m.content.strip() for m in messages if m.role == "system"]
    for message in messages:
        if message.role == "user":
            parts.append(f"Question: {message.content.strip()}")
        elif message.role == "assistant":
            parts.append(f"Answer: {message.content.strip()}")
    return "\n\n".join(parts) + "\n\nAnswer:"
