"""One task end to end: retrieve -> (compress) -> prompt -> N voters -> parse -> vote -> ground.

This is what `Workspace.run(task)` does; the front doors render the `SwarmResult`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import Backend, GenerationRequest, Message, Sampling
from swarm_lsp.swarm.answers import ParsedAnswer, parse_answer
from swarm_lsp.swarm.ballots import Ballot, VoteResult
from swarm_lsp.swarm.compression import Budget, fit_context
from swarm_lsp.swarm.context import PIECE_SEPARATOR, ContextPack, ContextSource, Focus
from swarm_lsp.swarm.engine import Placement, ProgressCallback, SwarmEngine, SwarmProgress
from swarm_lsp.swarm.exec_inputs import generated_checks
from swarm_lsp.swarm.exec_vote import ExecSpec
from swarm_lsp.swarm.grounding import check_citations, find_citations
from swarm_lsp.swarm.measure import TokenMeasure
from swarm_lsp.swarm.prompt_variants import voter_variants
from swarm_lsp.swarm.prompts import build_messages, max_tokens_for, stop_strings
from swarm_lsp.swarm.tasks import CODE_KINDS, Edit, Task
from swarm_lsp.swarm.verification import CodeFacts, Evidence, gather_evidence
from swarm_lsp.swarm.voting import GROUNDED_KINDS, vote

PROMPT_OVERHEAD_TOKENS = 200
"""System prompt and instructions, beyond the task's own text: kept out of the context budget."""
RETRIEVE_FACTOR = 2
"""For a codebase question, retrieval asks for this many times the context budget and compression
fits the surplus in. Tasks about a selection, and chat, retrieve what fits and are not compressed:
summarising costs model calls before the first answer token, and their focus is the selection."""
LOW_AGREEMENT = 0.5
LOW_AGREEMENT_BY_STRATEGY = {"grounded": 0.25}
"""Where accuracy drops, measured per strategy (bench/swarm_quality.py's calibration bins: `grounded`
winners under 0.25 were right 0-14% of the time, from 0.25 up about half the time and more)."""
MAX_CONTEXT_SOURCES = 8
"""Sources listed from the context (the most relevant pieces first), after those the answer cites."""
MAX_REFITS = 3
"""Times a context that overshoots the window (measured in model tokens) is retrieved again, smaller."""
REFIT_SLACK_TOKENS = 32


@dataclass(frozen=True)
class GenerationOptions:
    """One request's own sampling settings, over the swarm's (the HTTP API's temperature, max_tokens,
    stop and seed). Voter 0 stays greedy; `temperature` 0 makes every voter greedy."""

    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class CandidateView:
    index: int
    text: str
    valid: bool
    invalid_reason: str
    score: float
    votes: int
    finish_reason: str
    temperature: float
    completion_tokens: int = 0
    backend: str = ""
    """Where it was written: this machine's backend, or `peer host:port`."""
    model: str = ""
    evidence: dict[str, Any] | None = None
    """What of its claims checked out against the workspace (`Evidence.to_dict`), when checked."""


@dataclass
class SwarmResult:
    kind: str
    answer: str
    """Markdown for the user; invalid citations are flagged in it."""
    edit: Edit | None
    agreement: float
    strategy: str
    winner: int | None
    sources: list[str]
    candidates: list[CandidateView]
    voters: int
    degraded: bool
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model: str = ""
    prompt_tokens: int = 0
    """The longest prompt a voter read, in model tokens (voters with a variant read a little more)."""
    placed: dict[str, int] = field(default_factory=dict)
    """Voters run per machine ("local", or a peer's host:port), retries included."""
    failed_nodes: list[str] = field(default_factory=list)
    """Machines whose voters failed mid-request (their voters were retried elsewhere or lost)."""
    retried: int = 0

    @property
    def completion_tokens(self) -> int:
        """Tokens written by all the voters together."""
        return sum(candidate.completion_tokens for candidate in self.candidates)

    @property
    def low_agreement(self) -> bool:
        return self.agreement < LOW_AGREEMENT_BY_STRATEGY.get(self.strategy, LOW_AGREEMENT)

    def to_dict(self, *, candidates: bool = True) -> dict[str, Any]:
        data = {
            "kind": self.kind,
            "answer": self.answer,
            "edit": None if self.edit is None else asdict(self.edit),
            "agreement": round(self.agreement, 4),
            "low_agreement": self.low_agreement,
            "strategy": self.strategy,
            "winner": self.winner,
            "sources": self.sources,
            "voters": self.voters,
            "finished_voters": len(self.candidates),
            "degraded": self.degraded,
            "notes": self.notes,
            "timings": {key: round(value, 3) for key, value in self.timings.items()},
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "placed": self.placed,
            "failed_nodes": self.failed_nodes,
            "retried": self.retried,
        }
        if candidates:
            data["candidates"] = [asdict(candidate) for candidate in self.candidates]
        return data


@dataclass
class Conversation:
    """A chat: its context is retrieved once, so the prompt prefix (and the model's KV cache) stays put."""

    context: str
    citations: list[str]
    history: list[Message] = field(default_factory=list)


class SwarmRunner:
    def __init__(
        self,
        backend: Backend,
        context_source: ContextSource | None,
        root: Path,
        *,
        context_length: int,
        voters: int,
        max_tokens: int,
        temperature: float,
        voter_timeout: float,
        strategy: str = "auto",
        compress: bool = True,
        placement: Placement | None = None,
        facts: CodeFacts | None = None,
        extra_backends: Sequence[Backend] = (),
        model_weight: Callable[[str], float] | None = None,
        diversity: bool = True,
    ) -> None:
        """`placement`: where voters run (a federation's roster); by default all on `backend`.
        `facts`: the workspace's definitions, to check what answers claim (`grounded` voting).
        `extra_backends`: more models that share the voters; then `model_weight` (by model name)
        weighs each candidate in the vote. `diversity`: voters after the first read their own
        ending of a question's prompt (swarm/prompt_variants.py)."""
        self.backend = backend
        self.diversity = diversity
        self.facts = facts
        self.model_weight = model_weight if extra_backends else None
        self.context_source = context_source
        self.root = root
        self.context_length = context_length
        self.voters = voters
        self.max_tokens = max_tokens
        self.strategy = strategy
        self.compress = compress
        backends = [backend, *extra_backends]
        self.engine = SwarmEngine(
            backends, temperature=temperature, voter_timeout=voter_timeout, placement=placement
        )
        self.measure = TokenMeasure(backend)
        self.conversations: dict[str, Conversation] = {}

    async def run(
        self,
        task: Task,
        *,
        voters: int | None = None,
        strategy: str | None = None,
        cancel: CancellationToken | None = None,
        on_progress: ProgressCallback | None = None,
        exec_spec: ExecSpec | None = None,
        options: GenerationOptions | None = None,
    ) -> SwarmResult:
        """Answer `task` by vote. `exec_spec` adds tests or inputs for the `exec` strategy; without
        one, Python code answers are still compiled and the ones that fail are dropped."""
        task.validate()
        options = options or GenerationOptions()
        timings: dict[str, float] = {}
        notes: list[str] = []
        started = time.monotonic()
        voters = voters or self.voters
        max_tokens = options.max_tokens or max_tokens_for(task, self.max_tokens)
        context, citations, messages = await self._fitted(task, max_tokens, cancel, notes)
        if self._continues(task):
            messages = self._trim_history(task, context, citations, messages, max_tokens, notes)
            if self._overshoot(messages, max_tokens) > 0 and context:
                # Even without its earlier turns, the chat's first context and this turn do not fit
                # (a longer question, another file): this turn's context is chosen again, to fit.
                self.conversations.pop(task.conversation_id or "", None)
                notes.append("this chat's context was chosen again to fit the model's window")
                context, citations, messages = await self._fitted(task, max_tokens, cancel, notes)
        timings["retrieve"] = time.monotonic() - started
        variants = voter_variants(task, messages, context, voters) if self.diversity else {}
        tick = time.monotonic()
        generated = await self.engine.generate(
            messages,
            voters,
            max_tokens=max_tokens,
            stop=[*stop_strings(task), *options.stop],
            cancel=cancel,
            on_progress=on_progress,
            temperature=options.temperature,
            seed=options.seed,
            variants={i: v for i, v in variants.items() if self._overshoot(v, max_tokens) <= 0},
        )
        timings["generate"] = time.monotonic() - tick
        notes.extend(generated.failures)
        if generated.degraded:
            failed = f"; failed: {', '.join(generated.failed_nodes)}" if generated.failed_nodes else ""
            retried = f"; {generated.retried} retried elsewhere" if generated.retried else ""
            notes.append(
                f"degraded: {len(generated.candidates)} of {voters} voters answered{failed}{retried}"
            )
        tick = time.monotonic()
        parsed = [parse_answer(task, candidate.text) for candidate in generated.candidates]
        weigh = self.model_weight
        ballots = [
            Ballot(c.index, p.text, p.code, p.valid, p.invalid_reason, weigh(c.model) if weigh else 1.0)
            for c, p in zip(generated.candidates, parsed, strict=True)
        ]
        # A judge call would replace the backend's cached prompt; a chat keeps it for the next turn.
        chosen = strategy or self.strategy
        keep_cache = task.kind == "chat" and chosen != "judge"
        judge = None if keep_cache else self._judge(asyncio.get_running_loop(), cancel)
        evidence = None
        if self.facts is not None and task.kind in GROUNDED_KINDS and task.prompt.strip():
            answers = {b.index: b.text for b in ballots if b.valid}
            evidence = await asyncio.to_thread(gather_evidence, task.prompt, answers, self.facts) or None
        if exec_spec is None and task.kind in CODE_KINDS and task.language == "python":
            exec_spec = await asyncio.to_thread(generated_checks, task) or ExecSpec(language="python")
        result = await asyncio.to_thread(
            vote,
            ballots,
            chosen,
            task_kind=task.kind,
            judge=judge,
            exec_spec=exec_spec,
            question=_question_for(task),
            evidence=evidence,
        )
        timings["vote"] = time.monotonic() - tick
        notes.extend(result.notes)
        if on_progress is not None:
            on_progress(SwarmProgress("done", voters, len(generated.candidates), 0))
        winner = self._winner(parsed, generated.candidates, result)
        answer, answer_sources = self._ground(winner.text if winner else "", notes)
        if winner is None:
            notes.append("no candidate was valid; nothing to apply")
        if task.kind == "chat" and task.conversation_id and winner is not None:
            conversation = self.conversations[task.conversation_id]
            # The turn is stored exactly as sent, so the next turn's prompt starts with this one's
            # and the backend re-reads none of it (its KV cache holds the common prefix).
            raw = next(c.text for c in generated.candidates if c.index == result.winner)
            conversation.history.extend([messages[-1], Message("assistant", raw.strip())])
        timings["total"] = time.monotonic() - started
        return SwarmResult(
            kind=task.kind,
            answer=answer,
            edit=winner.edit if winner else None,
            agreement=result.agreement,
            strategy=result.strategy,
            winner=result.winner,
            sources=_unique([*answer_sources, *citations])[: len(answer_sources) + MAX_CONTEXT_SOURCES],
            candidates=_views(generated.candidates, parsed, result, evidence or {}),
            voters=voters,
            degraded=generated.degraded,
            notes=notes,
            timings=timings,
            model=self.backend.info.model,
            prompt_tokens=max((c.prompt_tokens for c in generated.candidates), default=0),
            placed=generated.placed,
            failed_nodes=generated.failed_nodes,
            retried=generated.retried,
        )

    # ------------------------------------------------------------------ context

    def _continues(self, task: Task) -> bool:
        """A chat past its first turn: its context is fixed (the KV cache holds it)."""
        conversation = self.conversations.get(task.conversation_id or "")
        return task.kind == "chat" and conversation is not None and bool(conversation.history)

    async def _fitted(
        self, task: Task, max_tokens: int, cancel: CancellationToken | None, notes: list[str]
    ) -> tuple[str, list[str], list[Message]]:
        """The context, its citations and the messages for `task`. A chat past its first turn keeps
        its context. Otherwise the budget was counted with the estimate (4 characters a token; code
        often runs nearer 3): measured with the model's own tokenizer where there is one, a context
        that overshoots the window is retrieved again with the overshoot taken off its budget."""
        continuing = self._continues(task)
        context, citations = await self._context(task, max_tokens, cancel, notes)
        messages = build_messages(task, context, context_citations=citations)
        cut = 0
        for _ in range(MAX_REFITS):
            over = self._overshoot(messages, max_tokens)
            if over <= 0 or not context or continuing:
                break
            cut += over + REFIT_SLACK_TOKENS
            context, citations = await self._context(task, max_tokens, cancel, notes, cut=cut)
            messages = build_messages(task, context, context_citations=citations)
        if not continuing and context and self._overshoot(messages, max_tokens) > 0:
            return self._drop_last_pieces(task, context, citations, max_tokens, notes)
        return context, citations, messages

    def _drop_last_pieces(
        self, task: Task, context: str, citations: list[str], max_tokens: int, notes: list[str]
    ) -> tuple[str, list[str], list[Message]]:
        """The last resort when retrieving again did not shrink the context enough (found by
        bench/soak.py: an open file's pieces come back whatever the budget): leave out its last
        pieces until the prompt fits."""
        pieces = context.split(PIECE_SEPARATOR)
        messages = build_messages(task, context, context_citations=citations)
        dropped = 0
        while pieces and self._overshoot(messages, max_tokens) > 0:
            pieces.pop()
            dropped += 1
            context = PIECE_SEPARATOR.join(pieces)
            citations = [citation for citation in citations if f"--- {citation}" in context]
            messages = build_messages(task, context, context_citations=citations)
        notes.append(f"{dropped} context piece(s) left out to fit the model's window")
        return context, citations, messages

    def _trim_history(
        self,
        task: Task,
        context: str,
        citations: list[str],
        messages: list[Message],
        max_tokens: int,
        notes: list[str],
    ) -> list[Message]:
        """A chat that outgrew the window leaves out its oldest turns (the context stays). The
        conversation keeps the shorter history, so later turns share a prefix again."""
        dropped = 0
        while self._overshoot(messages, max_tokens) > 0 and len(task.history) >= 2:
            task.history = list(task.history)[2:]
            dropped += 1
            messages = build_messages(task, context, context_citations=citations)
        if dropped:
            assert task.conversation_id is not None
            self.conversations[task.conversation_id].history = list(task.history)
            notes.append(f"{dropped} earlier turn(s) of this chat left out to fit the model's window")
        return messages

    def _overshoot(self, messages: Sequence[Message], max_tokens: int) -> int:
        """Tokens by which prompt plus answer exceed the window (<= 0 when they fit)."""
        return self.measure.prompt(messages) + max_tokens - self.context_length

    async def _context(
        self,
        task: Task,
        max_tokens: int,
        cancel: CancellationToken | None,
        notes: list[str],
        *,
        cut: int = 0,
    ) -> tuple[str, list[str]]:
        if self._continues(task):
            conversation = self.conversations[task.conversation_id]
            task.history = list(conversation.history)
            return conversation.context, conversation.citations
        count = self.measure.text
        overhead = PROMPT_OVERHEAD_TOKENS + count(task.prompt) + count(task.selection_text()) + cut
        budget = Budget.for_backend(self.context_length, max_tokens, overhead)
        context, citations = "", []
        if self.context_source is not None and budget.context_tokens > 0 and task.grounded:
            focus = None
            if task.path is not None:
                rng = task.range
                focus = Focus(task.path, rng.start_line if rng else None, rng.end_line if rng else None)
            query = task.prompt or task.selection_text()[:500]
            compress = self.compress and task.kind == "ask" and task.path is None
            factor = RETRIEVE_FACTOR if compress else 1
            pack = await asyncio.to_thread(
                self.context_source.context_for, query, budget.context_tokens * factor, focus
            )
            if compress:
                context, citations = await self._fit(pack, query, budget, cancel, notes)
            else:
                context, citations = pack.render(), pack.citations
        if task.kind == "chat" and task.conversation_id:
            self.conversations[task.conversation_id] = Conversation(context, citations, list(task.history))
        return context, citations

    async def _fit(
        self,
        pack: ContextPack,
        query: str,
        budget: Budget,
        cancel: CancellationToken | None,
        notes: list[str],
    ) -> tuple[str, list[str]]:
        # The system message also lists the citable pieces: their room comes off the context's.
        listed = self.measure.text(", ".join(pack.citations)) + 8 if pack.citations else 0
        budget = Budget(budget.window, budget.answer_tokens, budget.prompt_overhead + listed)
        fitted = await fit_context(
            pack, query, budget, self.backend, count_tokens=self.measure.text, cancel=cancel
        )
        notes.extend(fitted.notes)
        return fitted.context, fitted.citations

    # ------------------------------------------------------------------- voting

    def _judge(
        self, loop: asyncio.AbstractEventLoop, cancel: CancellationToken | None
    ) -> Callable[[str], str]:
        """The model as a judge, callable from the voting thread (universal self-consistency)."""

        def judge(prompt: str) -> str:
            request = GenerationRequest(
                messages=[Message("user", prompt)],
                n=1,
                sampling=Sampling(temperature=0.0, top_p=1.0, top_k=0),
                max_tokens=24,
                cancel=cancel,
            )
            future = asyncio.run_coroutine_threadsafe(self.backend.generate(request), loop)
            return future.result()[0].text

        return judge

    @staticmethod
    def _winner(
        parsed: Sequence[ParsedAnswer], candidates: Sequence[Any], result: VoteResult
    ) -> ParsedAnswer | None:
        if result.winner is None:
            return None
        for candidate, answer in zip(candidates, parsed, strict=True):
            if candidate.index == result.winner:
                return answer
        return None

    def _ground(self, text: str, notes: list[str]) -> tuple[str, list[str]]:
        """Check the answer's path:line citations against the files; flag the ones that do not exist."""
        cited = find_citations(text)
        if not cited:
            return text, []
        line_counts: dict[str, int] = {}
        for citation in cited:
            path = (self.root / citation.path).resolve()
            if path.is_file() and path.is_relative_to(self.root):
                try:
                    line_counts[citation.path] = path.read_text(errors="replace").count("\n") + 1
                except OSError:
                    continue
        report = check_citations(text, line_counts, set(line_counts))
        if report.invalid:
            notes.append(f"{len(report.invalid)} citation(s) in the answer point to lines that do not exist")
        return report.text_flagged, [f"{c.path}:{c.start}-{c.end}" for c in report.valid]


def _views(
    candidates: Sequence[Any],
    parsed: Sequence[ParsedAnswer],
    result: VoteResult,
    evidence: Mapping[int, Evidence],
) -> list[CandidateView]:
    return [
        CandidateView(
            index=candidate.index,
            text=answer.text,
            valid=answer.valid,
            invalid_reason=answer.invalid_reason,
            score=round(result.scores.get(candidate.index, 0.0), 4),
            votes=result.votes.get(candidate.index, 0) if result.votes else 0,
            finish_reason=candidate.finish_reason,
            temperature=candidate.sampling.temperature,
            completion_tokens=candidate.completion_tokens,
            backend=candidate.backend,
            model=candidate.model,
            evidence=evidence[candidate.index].to_dict() if candidate.index in evidence else None,
        )
        for candidate, answer in zip(candidates, parsed, strict=True)
    ]


def _question_for(task: Task) -> str:
    """What the judge is told the candidates answer."""
    if task.prompt.strip():
        return task.prompt.strip()
    where = f" in {task.path}" if task.path else ""
    return f"{task.kind} the selected code{where}"


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
