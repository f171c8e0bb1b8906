"""Token counts in the model's own tokenizer where the backend has one, else estimated with a margin.

The index estimates 4 characters a token; code runs nearer 3, so without a tokenizer the estimate
is scaled by ESTIMATE_MARGIN. Used wherever a prompt must fit the model window (the runner, and
compression's groups).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.models.base import Backend, Message

ESTIMATE_MARGIN = 1.3
"""Without the model's tokenizer: code runs nearer 3 characters a token than the estimate's 4."""
MESSAGE_OVERHEAD_TOKENS = 8
"""Chat-template tokens around each message, when they cannot be counted."""


class TokenMeasure:
    def __init__(self, backend: Backend, estimate: Callable[[str], int] = estimate_tokens) -> None:
        # Duck-typed: the Backend protocol has no tokenizer, llama.cpp has one.
        tokenize = getattr(backend, "tokenize", None)
        prompt_tokens = getattr(backend, "prompt_tokens", None)
        exact = callable(tokenize) and callable(prompt_tokens)
        self._tokenize = tokenize if exact else None
        self._prompt_tokens = prompt_tokens if exact else None
        self._estimate = estimate

    def text(self, text: str) -> int:
        """Model tokens of `text`."""
        if self._tokenize is not None:
            return len(self._tokenize(text)) if text else 0
        return math.ceil(self._estimate(text) * ESTIMATE_MARGIN)

    def prompt(self, messages: Sequence[Message]) -> int:
        """Model tokens of the chat prompt `messages` render to."""
        if self._prompt_tokens is not None:
            return len(self._prompt_tokens(messages))
        return sum(self.text(message.content) + MESSAGE_OVERHEAD_TOKENS for message in messages)
