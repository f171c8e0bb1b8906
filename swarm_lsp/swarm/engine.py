"""Fan one prompt out to N voters over one or more backends, and gather what comes back in time.

Voters differ by sampling: voter 0 decodes greedily (the model's single best guess), the others
sample at the configured temperature with their own seeds. All voters get the same messages, so
a local llama.cpp backend evaluates the shared prompt once and decodes the voters as one batch.

Degraded mode: a backend that fails, or voters that miss the deadline, are dropped and the vote
goes on with the candidates that finished; the result says so. Only when no voter finished is it
an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.models.base import Backend, Candidate, GenerationRequest, GenerationTimeout, Message, Sampling

log = logging.getLogger(__name__)

FINISHED = frozenset({"stop", "length"})


class SwarmError(SwarmLspError):
    """No voter produced an answer."""


class Cancelled(SwarmLspError):
    """The request was cancelled (the user pressed Ctrl-C, the editor sent $/cancelRequest)."""


@dataclass(frozen=True)
class SwarmProgress:
    phase: str  # "generating" | "voting" | "done"
    voters: int
    finished: int
    tokens: int
    leader_text: str = ""
    """What voter 0 has written so far: shown while the others are still running."""
    voter_tokens: tuple[int, ...] = ()
    """Tokens each voter has written so far, by voter index (a progress bar per generation)."""
    max_tokens: int = 0
    elapsed_s: float = 0.0


ProgressCallback = Callable[[SwarmProgress], None]


@dataclass
class EngineResult:
    candidates: list[Candidate]
    voters_requested: int
    failures: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def degraded(self) -> bool:
        return len(self.candidates) < self.voters_requested


class SwarmEngine:
    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        voter_timeout: float | None = 120.0,
        seed: int = 0,
    ) -> None:
        if not backends:
            raise ValueError("a swarm needs at least one backend")
        self.backends = list(backends)
        self.temperature = temperature
        self.top_p = top_p
        self.voter_timeout = voter_timeout
        self.seed = seed

    def samplings(
        self, voters: int, *, temperature: float | None = None, seed: int | None = None
    ) -> list[Sampling]:
        """Voter 0 greedy, the rest sampled with distinct seeds (deterministic for a given seed).

        `temperature` and `seed` override the engine's for one request; temperature 0 makes every
        voter greedy."""
        temperature = self.temperature if temperature is None else temperature
        seed = self.seed if seed is None else seed
        sampled = [
            Sampling(temperature=temperature, top_p=self.top_p, top_k=40, seed=seed + index)
            for index in range(1, voters)
        ]
        return [Sampling(temperature=0.0, top_p=1.0, top_k=0, seed=seed), *sampled]

    def _shares(self, voters: int) -> list[int]:
        """Voters per backend, in proportion to how many each can decode at once."""
        capacity = [max(1, backend.info.max_parallel) for backend in self.backends]
        total = sum(capacity)
        shares = [voters * cap // total for cap in capacity]
        for index in sorted(range(len(shares)), key=lambda i: -capacity[i])[: voters - sum(shares)]:
            shares[index] += 1
        return shares

    async def generate(
        self,
        messages: Sequence[Message],
        voters: int,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        cancel: CancellationToken | None = None,
        on_progress: ProgressCallback | None = None,
        prompt_lookup: bool = False,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> EngineResult:
        started = time.monotonic()
        samplings = self.samplings(voters, temperature=temperature, seed=seed)
        texts: dict[int, list[str]] = {}
        tokens = [0]
        per_voter = [0] * voters
        offsets: list[int] = []

        def on_token(global_index: int, piece: str) -> None:
            texts.setdefault(global_index, []).append(piece)
            tokens[0] += 1
            per_voter[global_index] += 1
            if on_progress is not None:
                on_progress(
                    SwarmProgress(
                        "generating",
                        voters,
                        0,
                        tokens[0],
                        "".join(texts.get(0, ())),
                        tuple(per_voter),
                        max_tokens,
                        time.monotonic() - started,
                    )
                )

        requests: list[tuple[Backend, GenerationRequest]] = []
        position = 0
        for backend, share in zip(self.backends, self._shares(voters), strict=True):
            if share == 0:
                continue
            offset = position
            offsets.append(offset)
            requests.append(
                (
                    backend,
                    GenerationRequest(
                        messages=list(messages),
                        n=share,
                        sampling=samplings[offset : offset + share],
                        max_tokens=max_tokens,
                        stop=list(stop),
                        on_token=lambda index, piece, offset=offset: on_token(offset + index, piece),
                        cancel=cancel,
                        timeout=self.voter_timeout,
                        prompt_lookup=prompt_lookup,
                    ),
                )
            )
            position += share
        outcomes = await asyncio.gather(
            *(backend.generate(request) for backend, request in requests), return_exceptions=True
        )
        result = EngineResult(candidates=[], voters_requested=voters)
        for (backend, _request), offset, outcome in zip(requests, offsets, outcomes, strict=True):
            name = f"{backend.info.backend}:{backend.info.model}"
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, GenerationTimeout):
                done = [c for c in outcome.partial if c.finish_reason in FINISHED]
                missed = len(outcome.partial) - len(done)
                deadline = f"{self.voter_timeout:.0f}s"
                result.failures.append(f"{name}: {missed} voter(s) missed the {deadline} deadline")
                outcome = done
            elif isinstance(outcome, BaseException):
                log.warning("voters on %s failed: %s", name, outcome)
                result.failures.append(f"{name}: {outcome}")
                continue
            for candidate in outcome:
                if candidate.finish_reason == "cancelled":
                    continue
                if candidate.finish_reason not in FINISHED:
                    result.failures.append(
                        f"{name}: voter {offset + candidate.index} ended with {candidate.finish_reason}"
                    )
                    continue
                candidate.index = offset + candidate.index
                candidate.backend = candidate.backend or name
                result.candidates.append(candidate)
        result.candidates.sort(key=lambda candidate: candidate.index)
        result.elapsed_s = time.monotonic() - started
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")
        if not result.candidates:
            raise SwarmError(
                "no voter produced an answer: " + "; ".join(result.failures or ["unknown failure"])
            )
        if on_progress is not None:
            finished = tuple(c.completion_tokens or per_voter[c.index] for c in result.candidates)
            on_progress(
                SwarmProgress(
                    "voting",
                    voters,
                    len(result.candidates),
                    tokens[0],
                    voter_tokens=tuple(per_voter) if len(finished) != voters else finished,
                    max_tokens=max_tokens,
                    elapsed_s=result.elapsed_s,
                )
            )
        return result
