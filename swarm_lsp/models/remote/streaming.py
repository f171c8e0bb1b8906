"""A chat answer as it streams in: one draft per candidate, fed by server-sent event chunks."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from swarm_lsp.models.base import Candidate, FinishReason, ModelError, Sampling, TokenCallback
from swarm_lsp.models.remote.http import RemoteError, error_message_in

log = logging.getLogger(__name__)

BACKEND_NAME = "remote"


@dataclass
class Draft:
    """A candidate while its text arrives."""

    index: int
    sampling: Sampling
    started_at: float
    pieces: list[str] = field(default_factory=list)
    seen: bool = False  # the server sent at least one chunk for this candidate
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    elapsed_s: float = 0.0
    error: ModelError | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, text: str) -> None:
        self.pieces.append(text)
        self.completion_tokens += 1  # most servers send one token per chunk; usage overrides it

    def finish(self, reason: FinishReason) -> None:
        if not self.finished:
            self.finish_reason = reason
            self.elapsed_s = time.monotonic() - self.started_at

    def fail(self, error: ModelError) -> None:
        self.error = error
        self.finish("error")

    def to_candidate(self) -> Candidate:
        return Candidate(
            index=self.index,
            text="".join(self.pieces),
            finish_reason=self.finish_reason or "error",
            sampling=self.sampling,
            completion_tokens=self.completion_tokens,
            prompt_tokens=self.prompt_tokens,
            elapsed_s=self.elapsed_s,
            backend=BACKEND_NAME,
        )


def candidates_or_error(drafts: Sequence[Draft]) -> list[Candidate]:
    """The candidates, unless every one failed: then the first failure is the answer."""
    failed = [d for d in drafts if d.error is not None]
    if failed and len(failed) == len(drafts):
        raise failed[0].error  # type: ignore[misc]
    for draft in failed:
        log.warning("candidate %d failed: %s", draft.index, draft.error)
    return [draft.to_candidate() for draft in drafts]


def apply_chunk(
    chunk: dict[str, Any], targets: Sequence[Draft], on_token: TokenCallback | None, base_url: str
) -> None:
    """Route one chunk's choices to their drafts (choice i feeds targets[i]) and stream the text."""
    if chunk.get("error"):
        message, _ = error_message_in(chunk)
        raise RemoteError(f"{base_url} reported an error while streaming: {message}")
    for choice in chunk.get("choices") or []:
        position = choice.get("index", 0)
        if not isinstance(position, int) or not 0 <= position < len(targets):
            continue  # more choices than asked for: not ours to place
        draft = targets[position]
        draft.seen = True
        delta = choice.get("delta") or choice.get("message") or {}
        text = delta.get("content") or choice.get("text") or ""  # chat, or a raw /completions prompt
        if text:
            draft.add(text)
            if on_token is not None:
                on_token(draft.index, text)
        if choice.get("finish_reason"):
            draft.finish(finish_reason_of(choice["finish_reason"]))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        apply_usage(usage, targets)


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream.

    Each data line is taken as one payload: OpenAI-compatible servers put one JSON object per
    line, and some omit the blank line that should end an event.
    """
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()


def parse_chunk(data: str, base_url: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise RemoteError(f"{base_url} sent a stream chunk that is not JSON: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise RemoteError(f"{base_url} sent a stream chunk that is not a JSON object: {data[:200]!r}")
    return chunk


def apply_usage(usage: dict[str, Any], targets: Sequence[Draft]) -> None:
    for draft in targets:
        if isinstance(usage.get("prompt_tokens"), int):
            draft.prompt_tokens = usage["prompt_tokens"]
    # With several choices the completion count is their sum; only a lone choice can take it.
    if len(targets) == 1 and isinstance(usage.get("completion_tokens"), int):
        targets[0].completion_tokens = usage["completion_tokens"]


def finish_reason_of(reason: str) -> FinishReason:
    if reason in ("length", "max_tokens"):
        return "length"
    if reason in ("content_filter", "error"):
        return "error"
    return "stop"  # stop, eos, stop_sequence, tool_calls: the model ended its answer
