"""Fan one prompt out to N voters over one or more backends, and gather what comes back in time.

Voters differ by sampling: voter 0 decodes greedily (the model's single best guess), the others
sample at the configured temperature with their own seeds. All voters get the same messages, or a
variant whose end differs (`variants`, swarm/prompt_variants.py), so a local llama.cpp backend
evaluates the shared prompt once and decodes the voters as one batch.

Where voters run is a `Placement`: fixed backends by default, or a federation's scheduler, which
spreads them over this machine and its peers. Failover: the voters of a machine that fails
mid-request are placed again on the others while the deadline allows.

Degraded mode: a backend that fails, or voters that miss the deadline, are dropped and the vote
goes on with the candidates that finished; the result says so (how many voters were asked, how
many answered, which machines failed). Only when no voter finished is it an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.models.base import (
    Backend,
    Candidate,
    ContextOverflow,
    Deadline,
    GenerationRequest,
    GenerationTimeout,
    Message,
    Sampling,
)

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
    placed: dict[str, int] = field(default_factory=dict)
    """Voters run on each machine ("local", or a peer's host:port), retries included."""
    failed_nodes: list[str] = field(default_factory=list)
    """Machines whose voters failed (a peer that died or timed out mid-request)."""
    retried: int = 0
    """Voters run again elsewhere after their machine failed."""
    overflows: list[ContextOverflow] = field(default_factory=list)
    """Machines that refused the prompt as longer than their context window."""

    @property
    def degraded(self) -> bool:
        """Fewer answers than voters asked for, or a machine failed on the way."""
        return len(self.candidates) < self.voters_requested or bool(self.failed_nodes)


class Assigned(Protocol):
    """Voters of one vote placed on one machine."""

    @property
    def key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def backend(self) -> Backend: ...
    @property
    def voters(self) -> int: ...


class Placement(Protocol):
    """Where voters run: fixed backends, or a federation's scheduler (federation/roster.py)."""

    def place(
        self,
        voters: int,
        *,
        max_tokens: int,
        exclude: Iterable[str] = (),
        deadline_s: float | None = None,
    ) -> Sequence[Assigned]:
        """Where up to `voters` voters run now, leaving out the machines in `exclude`; empty: nowhere.
        Voters that no machine is expected to finish within `deadline_s` may be left out (not the
        first)."""
        ...

    def report(
        self,
        assignment: Assigned,
        *,
        elapsed_s: float,
        tokens: int,
        prompt_tokens: int = 0,
        error: str | None = None,
    ) -> None:
        """How an assignment went: the most tokens a voter wrote and the prompt's length (its
        machine's speed), or a failure (for its health)."""
        ...


@dataclass(frozen=True)
class FixedShare:
    key: str
    label: str
    backend: Backend
    voters: int


class FixedBackends:
    """Voters per backend in proportion to how many each decodes at once. A failed backend's
    voters are not run again elsewhere: that is what a federation adds."""

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)

    def place(
        self,
        voters: int,
        *,
        max_tokens: int,
        exclude: Iterable[str] = (),
        deadline_s: float | None = None,
    ) -> list[FixedShare]:
        if list(exclude):
            return []
        capacity = [max(1, backend.info.max_parallel) for backend in self.backends]
        total = sum(capacity)
        shares = [voters * cap // total for cap in capacity]
        for index in sorted(range(len(shares)), key=lambda i: -capacity[i])[: voters - sum(shares)]:
            shares[index] += 1
        placed = []
        for number, (backend, share) in enumerate(zip(self.backends, shares, strict=True)):
            if share:
                name = f"{backend.info.backend}:{backend.info.model}"
                placed.append(FixedShare(f"{number}:{name}", name, backend, share))
        return placed

    def report(
        self,
        assignment: Assigned,
        *,
        elapsed_s: float,
        tokens: int,
        prompt_tokens: int = 0,
        error: str | None = None,
    ) -> None:
        return None


MAX_ROUNDS = 4
"""Placements of one vote: the first, and failovers of the voters whose machine failed."""


class SwarmEngine:
    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        voter_timeout: float | None = 120.0,
        seed: int = 0,
        placement: Placement | None = None,
    ) -> None:
        if not backends and placement is None:
            raise ValueError("a swarm needs at least one backend")
        self.backends = list(backends)
        self.placement: Placement = placement or FixedBackends(self.backends)
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
        variants: Mapping[int, Sequence[Message]] | None = None,
    ) -> EngineResult:
        """N candidates for `messages`. Voters whose machine fails are placed again elsewhere while
        the deadline allows (a federation's placement); the rest of the vote goes on without them.
        `variants`: other messages for some voters, by voter index (backends may answer `messages`)."""
        started = time.monotonic()
        deadline = Deadline(self.voter_timeout)
        samplings = self.samplings(voters, temperature=temperature, seed=seed)
        tracker = _Tracker(voters, max_tokens, started, on_progress)
        result = EngineResult(candidates=[], voters_requested=voters)
        pending = list(range(voters))
        failed: set[str] = set()
        for round_number in range(MAX_ROUNDS):
            if not pending or deadline.passed or (cancel is not None and cancel.cancelled):
                break
            placed = self.placement.place(
                len(pending), max_tokens=max_tokens, exclude=failed, deadline_s=deadline.remaining()
            )
            if not placed:
                break
            if round_number:
                result.retried += sum(assignment.voters for assignment in placed)
            groups: list[tuple[Assigned, list[int]]] = []
            for assignment in placed:
                group, pending = pending[: assignment.voters], pending[assignment.voters :]
                groups.append((assignment, group))
                result.placed[assignment.label] = result.placed.get(assignment.label, 0) + len(group)
            if pending and not round_number:
                result.failures.append(
                    f"{len(pending)} voter(s) left out: no machine could write them before the deadline"
                )
                pending = []
            outcomes = await asyncio.gather(
                *(
                    self._attempt(
                        assignment,
                        GenerationRequest(
                            messages=list(messages),
                            n=len(group),
                            sampling=[samplings[index] for index in group],
                            max_tokens=max_tokens,
                            stop=list(stop),
                            on_token=lambda i, piece, group=group: tracker.token(group[i], piece),
                            cancel=cancel,
                            timeout=deadline.remaining(),
                            prompt_lookup=prompt_lookup,
                            variants=[variants.get(index) for index in group] if variants else None,
                        ),
                    )
                    for assignment, group in groups
                )
            )
            for (assignment, group), outcome in zip(groups, outcomes, strict=True):
                retry = self._settle(assignment, group, outcome, result)
                if retry:
                    failed.add(assignment.key)
                    pending.extend(retry)
        if pending:
            result.failures.append(f"{len(pending)} voter(s) could not be placed again in time")
        result.candidates.sort(key=lambda candidate: candidate.index)
        result.elapsed_s = time.monotonic() - started
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")
        if not result.candidates:
            if result.overflows and len(result.overflows) == len(result.failures):
                raise result.overflows[0]  # the prompt itself is too long: the caller must shorten it
            raise SwarmError(
                "no voter produced an answer: " + "; ".join(result.failures or ["unknown failure"])
            )
        tracker.voting(result)
        return result

    async def _attempt(
        self, assignment: Assigned, request: GenerationRequest
    ) -> list[Candidate] | BaseException:
        """One machine's voters; how it went is reported the moment it ends (so its load is freed
        while the others still write). A deadline missed is slowness, not a failure of the machine."""
        started = time.monotonic()
        try:
            candidates = await assignment.backend.generate(request)
        except asyncio.CancelledError:
            raise
        except GenerationTimeout as timeout:
            elapsed = time.monotonic() - started
            self.placement.report(assignment, elapsed_s=elapsed, tokens=request.max_tokens)
            return timeout
        except Exception as error:
            self.placement.report(
                assignment, elapsed_s=0.0, tokens=0, error=str(error) or type(error).__name__
            )
            return error
        tokens = max((c.completion_tokens for c in candidates), default=0)
        prompt = max((c.prompt_tokens for c in candidates), default=0)
        elapsed = time.monotonic() - started
        self.placement.report(assignment, elapsed_s=elapsed, tokens=tokens, prompt_tokens=prompt)
        return candidates

    def _settle(
        self,
        assignment: Assigned,
        group: list[int],
        outcome: list[Candidate] | BaseException,
        result: EngineResult,
    ) -> list[int]:
        """Take one machine's candidates into `result`; the voters to place again if it failed."""
        name = assignment.label
        retry: list[int] = []
        if isinstance(outcome, GenerationTimeout):
            candidates = [c for c in outcome.partial if c.finish_reason in FINISHED]
            missed = len(outcome.partial) - len(candidates)
            deadline = f"{self.voter_timeout:.0f}s"
            result.failures.append(f"{name}: {missed} voter(s) missed the {deadline} deadline")
        elif isinstance(outcome, ContextOverflow):
            # The machine is fine, the prompt is too long for its window: not placed again.
            result.failures.append(f"{name}: {outcome}")
            result.overflows.append(outcome)
            return []
        elif isinstance(outcome, BaseException):
            log.warning("voters on %s failed: %s", name, outcome)
            result.failures.append(f"{name}: {outcome}")
            result.failed_nodes.append(name)
            return group
        else:
            candidates = outcome
        for candidate in candidates:
            if candidate.finish_reason == "cancelled":
                continue
            index = group[candidate.index]
            if candidate.finish_reason not in FINISHED:
                result.failures.append(f"{name}: voter {index} ended with {candidate.finish_reason}")
                continue
            candidate.index = index
            candidate.backend = candidate.backend or name
            candidate.model = candidate.model or assignment.backend.info.model
            result.candidates.append(candidate)
        return retry


class _Tracker:
    """Tokens per voter as they arrive, reported as progress."""

    def __init__(
        self, voters: int, max_tokens: int, started: float, on_progress: ProgressCallback | None
    ) -> None:
        self.voters = voters
        self.max_tokens = max_tokens
        self.started = started
        self.on_progress = on_progress
        self.texts: dict[int, list[str]] = {}
        self.tokens = 0
        self.per_voter = [0] * voters

    def token(self, index: int, piece: str) -> None:
        self.texts.setdefault(index, []).append(piece)
        self.tokens += 1
        self.per_voter[index] += 1
        if self.on_progress is not None:
            self.on_progress(
                SwarmProgress(
                    "generating",
                    self.voters,
                    0,
                    self.tokens,
                    "".join(self.texts.get(0, ())),
                    tuple(self.per_voter),
                    self.max_tokens,
                    time.monotonic() - self.started,
                )
            )

    def voting(self, result: EngineResult) -> None:
        if self.on_progress is None:
            return
        finished = tuple(c.completion_tokens or self.per_voter[c.index] for c in result.candidates)
        self.on_progress(
            SwarmProgress(
                "voting",
                self.voters,
                len(result.candidates),
                self.tokens,
                voter_tokens=tuple(self.per_voter) if len(finished) != self.voters else finished,
                max_tokens=self.max_tokens,
                elapsed_s=result.elapsed_s,
            )
        )
