"""The one interface every model backend speaks, and the errors they raise.

A backend turns a `GenerationRequest` (chat messages, how many candidates, per-candidate
sampling) into a list of `Candidate`s. It is async so front doors can run several requests and
cancel them; backends that decode on a CPU thread check a `CancellationToken` once per token step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from swarm_lsp.basics import CancellationToken, SwarmLspError

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]


class ModelError(SwarmLspError):
    """Base of the model backend errors."""


class ModelNotFound(ModelError):
    """The model file, directory or remote model name does not exist."""


class DoesNotFit(ModelError):
    """The model (with the requested context and voters) needs more memory than the machine has."""


class BackendUnavailable(ModelError):
    """The backend cannot run here: a library is missing or a server does not answer."""


class ContextOverflow(ModelError):
    """The prompt plus the requested new tokens do not fit in the model's context window."""


class GenerationTimeout(ModelError):
    """Generation did not finish before its deadline; `partial` holds what was produced."""

    def __init__(self, message: str, partial: Sequence[Candidate] = ()) -> None:
        super().__init__(message)
        self.partial = list(partial)


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Sampling:
    """How one candidate is sampled. temperature 0 means greedy (argmax)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


GREEDY = Sampling(temperature=0.0, top_p=1.0, top_k=0, seed=0)

TokenCallback = Callable[[int, str], None]
"""Called with (candidate index, new text) as text is produced. Must be quick and thread-safe."""


@dataclass
class GenerationRequest:
    """One prompt, n candidates.

    `sampling` is either one Sampling for all candidates (seeds then differ by candidate index:
    seed + i) or a sequence with exactly n entries.
    """

    messages: Sequence[Message]
    n: int = 1
    sampling: Sampling | Sequence[Sampling] = field(default_factory=Sampling)
    max_tokens: int = 256
    stop: Sequence[str] = ()
    on_token: TokenCallback | None = None
    cancel: CancellationToken | None = None
    timeout: float | None = None
    """Seconds from the start of generate(); past it, decoding stops and GenerationTimeout is raised."""
    prompt_lookup: bool = False
    """Prompt-lookup speculative decoding: draft tokens by matching n-grams of the output in the prompt."""
    reuse_whole_prefix: bool = False
    """Reuse the cached prompt up to the new prompt's last token, where by default the last 64 are
    evaluated again so the result is bit-for-bit that of a cold run. For inline completion, where a
    keystroke adds a few tokens and latency matters more than the last bits of the logits."""
    prompt: str | None = None
    """Raw text the model continues as it is, without the chat template (code completion and
    fill-in-the-middle); `messages` is then left empty. Special-token text (FIM markers) is parsed."""
    variants: Sequence[Sequence[Message] | None] | None = None
    """Per candidate, other messages to answer instead of `messages` (None: `messages`), for prompt
    diversity. They should differ from `messages` only near the end: the llama.cpp backend evaluates
    the common part once and each candidate's own tail in one batch, and its first candidate always
    reads `messages`. A backend may answer `messages` for any candidate (remote servers do)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not self.messages and self.prompt is None:
            raise ValueError("a generation request needs at least one message, or a raw prompt")
        if self.messages and self.prompt is not None:
            raise ValueError("a generation request takes messages or a raw prompt, not both")
        if not isinstance(self.sampling, Sampling) and len(self.sampling) != self.n:
            raise ValueError(f"got {len(self.sampling)} sampling settings for n={self.n} candidates")
        if self.variants is not None and (self.prompt is not None or len(self.variants) != self.n):
            raise ValueError(f"variants need messages and exactly n={self.n} entries")

    def sampling_for(self, index: int) -> Sampling:
        """The sampling settings of candidate `index`."""
        if isinstance(self.sampling, Sampling):
            s = self.sampling
            return Sampling(s.temperature, s.top_p, s.top_k, s.seed + index)
        return self.sampling[index]


class Deadline:
    """A monotonic deadline derived from a request's timeout."""

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + timeout

    @property
    def passed(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())


@dataclass
class Candidate:
    index: int
    text: str
    finish_reason: FinishReason
    sampling: Sampling
    completion_tokens: int = 0
    prompt_tokens: int = 0
    elapsed_s: float = 0.0
    backend: str = ""
    model: str = ""
    """The model that wrote it (set by the swarm engine from the backend that ran the voter)."""


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is serving, for doctor output and result metadata."""

    backend: str
    model: str
    context_length: int
    max_parallel: int
    detail: str = ""
    fim: tuple[str, str, str] | None = None
    """The model's fill-in-the-middle markers (prefix, suffix, middle) when its tokenizer declares
    them; a raw prompt `pre + before + suf + after + mid` then asks for the text between."""


@runtime_checkable
class Backend(Protocol):
    """A model that can produce n candidates for a chat prompt."""

    @property
    def info(self) -> BackendInfo: ...

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        """Produce request.n candidates, in index order.

        Cancellation: if request.cancel is cancelled, or the awaiting task is cancelled, decoding
        stops within one token step. A cancelled token yields candidates with finish_reason
        "cancelled"; a cancelled task re-raises asyncio.CancelledError.
        """
        ...

    async def aclose(self) -> None:
        """Release the model, threads and connections. Idempotent."""
        ...


async def run_cancellable(
    work: Callable[[CancellationToken], list[Candidate]], token: CancellationToken | None
) -> list[Candidate]:
    """Run blocking decode `work` on a thread; task cancellation flips the token and waits for it.

    The thread is never abandoned mid-step: we wait for it to notice the token (one token step)
    so the model's context is consistent for the next request.
    """
    token = token or CancellationToken()
    future = asyncio.ensure_future(asyncio.to_thread(work, token))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        # The decoder's own error is irrelevant once the caller has cancelled.
        with contextlib.suppress(Exception):
            await future
        raise
