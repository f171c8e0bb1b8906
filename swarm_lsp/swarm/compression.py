"""Map-reduce compression: fit a context pack that is larger than the budget into it.

When the retrieved context does not fit, the most relevant pieces stay verbatim (up to
`verbatim_share` of the budget) and the rest is summarised with the question in view:

1. split: the other pieces, in rank order, are packed into map groups, each small enough that the
   summarisation prompt, the group and the summary fit the model window;
2. map: every group is summarised in one pass: one greedy request per group, all issued at once (a
   backend takes a batch of candidates of ONE prompt, so different prompts are different
   requests; a remote server serves them in parallel, llama.cpp in turn). The question comes
   before the code in every prompt, so the requests share a prefix that llama.cpp keeps cached;
3. reduce: while the summaries exceed the room left for them, they are grouped and summarised
   again (at most MAX_REDUCE_ROUNDS rounds); the last resort is dropping the least relevant
   summaries and cutting the last one kept, with a note.

Each summary is written under the citations of the pieces it covers. We add that header ourselves
after generation, so grounding never depends on a small model copying "path:12-40" correctly.

Units. The budget (`Budget.context_tokens`) is counted with `count_tokens`, the caller's measure,
the same one it used to size the rest of the prompt. The model window is counted in the model's
own tokens when the backend can tokenize (llama.cpp); otherwise with `count_tokens` and a margin,
and a request the server still rejects as too long is split in two.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from swarm_lsp.basics import CancellationToken
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.models.base import GREEDY, Backend, ContextOverflow, GenerationRequest, Message, ModelError
from swarm_lsp.swarm.context import ContextPack, ContextPiece
from swarm_lsp.swarm.engine import Cancelled
from swarm_lsp.swarm.measure import TokenMeasure

Stage = Literal["map", "reduce"]
TokenCounter = Callable[[str], int]

MAX_REDUCE_ROUNDS = 2
MIN_SUMMARY_TOKENS = 16
"""Below this a summary says nothing; rather summarise at full length and reduce again."""
MIN_GROUP_TOKENS = 64
"""A window leaving less room than this for the text to summarise is too small to compress with."""
WINDOW_SLACK = 8
"""Model tokens kept free in each request: tokenization at the joins of pieces is not additive."""
ITEM_JOIN_TOKENS = 2
SUMMARY_HEADER = "--- summaries (of the pieces not shown in full)"
CUT_MARKER = " [...]"
EMPTY_SUMMARY = "(nothing relevant to the question)"
_FENCE = re.compile(r"^\s*(```|~~~)")

SYSTEM_PROMPT = (
    "You condense source code context for another assistant who must answer a question about it. "
    "Keep only what helps answer the question: names, signatures, behaviour, constants. Be brief."
)
INSTRUCTIONS: dict[Stage, str] = {
    "map": "Summarise the code below for answering the question. "
    "Start each point with the path:lines it comes from.",
    "reduce": "Merge the notes below into shorter notes for answering the question. "
    "Start each point with the path:lines it comes from.",
}


@dataclass(frozen=True)
class Budget:
    """How the model window is shared between the context, the prompt text and the answer."""

    window: int
    """The model's context length in tokens (prompt plus answer)."""
    answer_tokens: int
    """Reserved for the answer."""
    prompt_overhead: int
    """The system prompt and the task text."""

    @property
    def context_tokens(self) -> int:
        """What the context may take."""
        return max(0, self.window - self.answer_tokens - self.prompt_overhead)

    @classmethod
    def for_backend(cls, context_length: int, answer_tokens: int, prompt_overhead: int) -> Budget:
        if context_length <= 0:
            raise ValueError(
                f"the model's context length must be positive, got {context_length}; "
                "set it in the model settings when the backend cannot report it"
            )
        if answer_tokens < 0 or prompt_overhead < 0:
            raise ValueError(
                f"answer_tokens and prompt_overhead must not be negative "
                f"(got {answer_tokens} and {prompt_overhead})"
            )
        return cls(window=context_length, answer_tokens=answer_tokens, prompt_overhead=prompt_overhead)


@dataclass
class CompressionResult:
    context: str
    """The text to put in the prompt (verbatim pieces, then summaries), within the budget."""
    compressed: bool
    """False when the original fit and was returned unchanged."""
    pieces_in: int
    pieces_summarised: int
    pieces_verbatim: int
    tokens_in: int
    tokens_out: int
    citations: list[str] = field(default_factory=list)
    """The citations of everything the context still refers to, in the order they appear."""
    notes: list[str] = field(default_factory=list)


async def fit_context(
    pack: ContextPack,
    question: str,
    budget: Budget,
    backend: Backend,
    *,
    count_tokens: TokenCounter = estimate_tokens,
    cancel: CancellationToken | None = None,
    summary_tokens: int = 96,
    verbatim_share: float = 0.4,
) -> CompressionResult:
    """The pack as prompt text within `budget.context_tokens`, summarising what does not fit.

    Raises Cancelled when `cancel` is set before or while the summaries are generated.
    """
    if summary_tokens < 1:
        raise ValueError(f"summary_tokens must be at least 1, got {summary_tokens}")
    if not 0.0 <= verbatim_share <= 1.0:
        raise ValueError(f"verbatim_share must be between 0 and 1, got {verbatim_share}")
    rendered = pack.render()
    tokens_in = count_tokens(rendered)
    if tokens_in <= budget.context_tokens:
        return CompressionResult(
            context=rendered,
            compressed=False,
            pieces_in=len(pack.pieces),
            pieces_summarised=0,
            pieces_verbatim=len(pack.pieces),
            tokens_in=tokens_in,
            tokens_out=tokens_in,
            citations=pack.citations,
        )
    _check(cancel)
    compressor = _Compressor(question, budget, backend, count_tokens, cancel, summary_tokens)
    return await compressor.run(pack, tokens_in, verbatim_share)


# ------------------------------------------------------------------------------ budget math


def plan_groups(costs: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `costs` in consecutive groups whose costs sum to at most `capacity`.

    Groups keep the rank order, so dropping the last summaries drops the least relevant pieces.
    """
    groups: list[list[int]] = []
    used = capacity + 1
    for index, cost in enumerate(costs):
        if cost > capacity:
            raise ValueError(f"item {index} costs {cost} tokens, more than a group holds ({capacity})")
        if used + cost > capacity:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += cost
    return groups


def split_verbatim(
    pieces: Sequence[ContextPiece], limit: int, cost: Callable[[ContextPiece], int]
) -> tuple[list[ContextPiece], list[ContextPiece]]:
    """(kept, rest): pieces kept in rank order while their costs sum to at most `limit`.

    A piece too large for what is left goes to `rest` and smaller, later pieces may still be kept.
    """
    kept: list[ContextPiece] = []
    rest: list[ContextPiece] = []
    used = 0
    for piece in pieces:
        piece_cost = cost(piece)
        if used + piece_cost <= limit:
            kept.append(piece)
            used += piece_cost
        else:
            rest.append(piece)
    return kept, rest


def summary_length(room: int, header_costs: Sequence[int], summary_tokens: int) -> int:
    """New tokens per summary so that all of them, under their headers, fit `room`.

    Never more than `summary_tokens`; when an even share is below MIN_SUMMARY_TOKENS the
    summaries are written at full length and the reduce step shortens them.
    """
    if not header_costs:
        return summary_tokens
    share = (room - sum(header_costs)) // len(header_costs)
    return min(summary_tokens, share) if share >= MIN_SUMMARY_TOKENS else summary_tokens


# ------------------------------------------------------------------------------ the passes


@dataclass(frozen=True)
class _Summary:
    pieces: tuple[ContextPiece, ...]
    """The original pieces it covers, in rank order."""
    text: str

    @property
    def header(self) -> str:
        return "from " + ", ".join(piece.citation for piece in self.pieces) + ":"

    def render(self) -> str:
        return f"{self.header}\n{self.text}"


@dataclass(frozen=True)
class _Item:
    """Something to summarise: a piece (map) or a summary (reduce), as it reads in the prompt."""

    pieces: tuple[ContextPiece, ...]
    text: str


class _Compressor:
    def __init__(
        self,
        question: str,
        budget: Budget,
        backend: Backend,
        count_tokens: TokenCounter,
        cancel: CancellationToken | None,
        summary_tokens: int,
    ) -> None:
        self.question = question
        self.budget = budget
        self.backend = backend
        self.count_tokens = count_tokens
        self.cancel = cancel
        self.summary_tokens = summary_tokens
        self.notes: list[str] = []
        self.requests = 0
        self._measure = TokenMeasure(backend, count_tokens)

    # -- measures ----------------------------------------------------------------------------

    def model_tokens(self, text: str) -> int:
        return self._measure.text(text)

    def item_cost(self, text: str) -> int:
        """Model tokens an item takes in a group, with the blank line that joins it to the next."""
        return self.model_tokens(text) + ITEM_JOIN_TOKENS

    def prompt_size(self, messages: Sequence[Message]) -> int:
        return self._measure.prompt(messages)

    def group_capacity(self, stage: Stage) -> int:
        """Model tokens a group may take: the window less the prompt, the summary and slack."""
        empty = self.prompt_size(self.messages("", stage))
        return self.budget.window - empty - self.summary_tokens - WINDOW_SLACK

    def messages(self, body: str, stage: Stage) -> list[Message]:
        # The question and the instructions come first so every request shares that prefix.
        return [
            Message("system", SYSTEM_PROMPT),
            Message("user", f"Question: {self.question}\n\n{INSTRUCTIONS[stage]}\n\n{body}"),
        ]

    def fits(self, verbatim: Sequence[ContextPiece], summaries: Sequence[_Summary]) -> bool:
        return self.count_tokens(assemble(verbatim, summaries)) <= self.budget.context_tokens

    # -- the run -----------------------------------------------------------------------------

    async def run(self, pack: ContextPack, tokens_in: int, verbatim_share: float) -> CompressionResult:
        limit = self.budget.context_tokens
        verbatim, rest = split_verbatim(
            pack.pieces, int(limit * verbatim_share), lambda piece: self.count_tokens(render([piece])) + 1
        )
        room = limit - self.count_tokens(assemble(verbatim, [_Summary((), "")]))
        capacity = self.group_capacity("map")
        if not rest:
            return self._fallback(pack, tokens_in, "nothing was left to summarise")
        if room < MIN_SUMMARY_TOKENS:
            return self._fallback(pack, tokens_in, f"the {limit}-token budget leaves no room for summaries")
        if capacity < MIN_GROUP_TOKENS:
            return self._fallback(
                pack, tokens_in, f"the {self.budget.window}-token model window is too small to summarise in"
            )
        items = [item for piece in rest if (item := self._map_item(piece, capacity)) is not None]
        try:
            groups = self._plan(items, "map")
            assert groups is not None, "every map item was cut to fit a group"
            summaries = await self._pass(groups, "map", room)
            self.notes.insert(
                0,
                f"context of {tokens_in} tokens exceeds the {limit}-token budget: kept {len(verbatim)} "
                f"pieces verbatim, summarised {len(items)} pieces into {len(summaries)} summaries",
            )
            rounds = 0
            while self._size(summaries) > room and rounds < MAX_REDUCE_ROUNDS:
                groups = self._plan([_Item(s.pieces, s.render()) for s in summaries], "reduce")
                if groups is None or len(groups) == len(summaries):
                    break  # nothing can be merged: only cutting helps now
                reduced = await self._pass(groups, "reduce", room)
                rounds += 1
                self.notes.append(
                    f"summaries reduced from {len(summaries)} to {len(reduced)} (round {rounds})"
                )
                summaries = reduced
        except ModelError as error:
            return self._fallback(pack, tokens_in, f"summarisation failed ({error})")
        verbatim, summaries = self._trim(verbatim, summaries)
        return self._result(pack, tokens_in, verbatim, summaries)

    def _map_item(self, piece: ContextPiece, capacity: int) -> _Item | None:
        """The piece as a map item, cut to its leading lines when it alone exceeds a group."""
        if self.item_cost(render([piece])) <= capacity:
            return _Item((piece,), render([piece]))
        cut = cut_piece(piece, lambda candidate: self.item_cost(render([candidate])) <= capacity)
        if cut is None:
            self.notes.append(f"{piece.citation} left out: not even one line fits the model window")
            return None
        self.notes.append(f"{piece.citation} cut to {cut.citation} to fit the model window")
        return _Item((cut,), render([cut]))

    def _plan(self, items: Sequence[_Item], stage: Stage) -> list[list[_Item]] | None:
        """Items in groups that each fit one request; None when an item alone is too large."""
        capacity = self.group_capacity(stage)
        costs = [self.item_cost(item.text) for item in items]
        if any(cost > capacity for cost in costs):
            return None
        return [[items[index] for index in group] for group in plan_groups(costs, capacity)]

    async def _pass(self, groups: Sequence[list[_Item]], stage: Stage, room: int) -> list[_Summary]:
        """One summary per group; every group's request is issued at once."""
        _check(self.cancel)
        headers = [self.count_tokens(_Summary(_covered(group), "").header) + 2 for group in groups]
        max_tokens = summary_length(room, headers, self.summary_tokens)
        lanes = asyncio.Semaphore(max(1, self.backend.info.max_parallel))
        # Stopping the other requests after one failed must not cancel the caller's token.
        token = _LinkedToken(self.cancel)

        async def summarise(group: list[_Item]) -> list[_Summary]:
            async with lanes:
                return await self._summarise(group, stage, max_tokens, token)

        tasks = [asyncio.ensure_future(summarise(group)) for group in groups]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            token.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [summary for summaries in done for summary in summaries]

    async def _summarise(
        self, group: Sequence[_Item], stage: Stage, max_tokens: int, token: CancellationToken
    ) -> list[_Summary]:
        _check(self.cancel)
        body = "\n\n".join(item.text for item in group)
        request = GenerationRequest(
            messages=self.messages(body, stage),
            n=1,
            sampling=GREEDY,
            max_tokens=max_tokens,
            cancel=token,
        )
        self.requests += 1
        try:
            candidates = await self.backend.generate(request)
        except ContextOverflow:
            if len(group) == 1:
                raise
            # Our estimate of the server's tokens was low: halve the group and try again.
            half = len(group) // 2
            first = await self._summarise(group[:half], stage, max_tokens, token)
            return [*first, *await self._summarise(group[half:], stage, max_tokens, token)]
        _check(self.cancel)
        if candidates[0].finish_reason == "cancelled":
            raise Cancelled("context compression was cancelled")
        return [_Summary(_covered(group), _clean(candidates[0].text))]

    def _size(self, summaries: Sequence[_Summary]) -> int:
        return self.count_tokens("\n\n".join(summary.render() for summary in summaries))

    # -- last resorts ------------------------------------------------------------------------

    def _trim(
        self, verbatim: list[ContextPiece], summaries: list[_Summary]
    ) -> tuple[list[ContextPiece], list[_Summary]]:
        """Drop the least relevant summaries (the last one kept may be cut) until all fits."""
        summaries = list(summaries)
        dropped: list[_Summary] = []
        while summaries and not self.fits(verbatim, summaries):
            last = summaries.pop()
            cut = self._cut_summary(verbatim, summaries, last) if self.fits(verbatim, summaries) else None
            if cut is not None:
                summaries.append(cut)
                self.notes.append(f"the summary of {len(last.pieces)} pieces was cut to fit the budget")
                break
            dropped.append(last)
        if dropped:
            lost = [piece.citation for summary in reversed(dropped) for piece in summary.pieces]
            self.notes.append(
                f"dropped the summaries of {len(lost)} pieces to fit the budget: {', '.join(lost)}"
            )
        while verbatim and not self.fits(verbatim, summaries):
            self.notes.append(f"dropped {verbatim.pop().citation} to fit the budget")
        return verbatim, summaries

    def _cut_summary(
        self, verbatim: Sequence[ContextPiece], kept: Sequence[_Summary], summary: _Summary
    ) -> _Summary | None:
        """`summary` with its text cut so that it fits after `kept`; None when no text fits."""
        text = cut_text(summary.text, lambda text: self.fits(verbatim, [*kept, replace(summary, text=text)]))
        return None if text is None else replace(summary, text=text)

    def _fallback(self, pack: ContextPack, tokens_in: int, reason: str) -> CompressionResult:
        """No summaries: the most relevant pieces that fit the whole budget."""
        limit = self.budget.context_tokens
        kept, _rest = split_verbatim(pack.pieces, limit, lambda piece: self.count_tokens(render([piece])) + 1)
        if not kept and pack.pieces:
            first = pack.pieces[0]
            cut = cut_piece(first, lambda candidate: self.count_tokens(render([candidate])) <= limit)
            if cut is not None:
                kept = [cut]
                self.notes.append(f"{first.citation} cut to {cut.citation} to fit the budget")
        kept, _ = self._trim(kept, [])
        self.notes.insert(0, f"{reason}; kept the {len(kept)} most relevant pieces that fit, in full")
        return self._result(pack, tokens_in, kept, [])

    def _result(
        self, pack: ContextPack, tokens_in: int, verbatim: list[ContextPiece], summaries: list[_Summary]
    ) -> CompressionResult:
        context = assemble(verbatim, summaries)
        tokens_out = self.count_tokens(context)
        assert tokens_out <= self.budget.context_tokens, (
            f"compressed context of {tokens_out} tokens exceeds its {self.budget.context_tokens}-token budget"
        )
        summarised = [piece for summary in summaries for piece in summary.pieces]
        if self.requests:
            self.notes.append(f"{self.requests} summarisation requests")
        return CompressionResult(
            context=context,
            compressed=True,
            pieces_in=len(pack.pieces),
            pieces_summarised=len(summarised),
            pieces_verbatim=len(verbatim),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            citations=_unique([piece.citation for piece in [*verbatim, *summarised]]),
            notes=self.notes,
        )


# ------------------------------------------------------------------------------ text helpers


def render(pieces: Sequence[ContextPiece]) -> str:
    """Pieces exactly as ContextPack renders them."""
    return ContextPack(query="", pieces=list(pieces)).render()


def assemble(verbatim: Sequence[ContextPiece], summaries: Sequence[_Summary]) -> str:
    parts = [render(verbatim)] if verbatim else []
    if summaries:
        parts.append(SUMMARY_HEADER + "\n" + "\n\n".join(summary.render() for summary in summaries))
    return "\n\n".join(parts)


def cut_piece(piece: ContextPiece, fits: Callable[[ContextPiece], bool]) -> ContextPiece | None:
    """The piece cut to its longest run of leading lines that fits, its citation narrowed to match."""
    lines = piece.text.splitlines()

    def first(count: int) -> ContextPiece:
        if piece.reason == "outline":
            return replace(piece, text="\n".join(lines[:count]))
        return replace(piece, text="\n".join(lines[:count]), end_line=piece.start_line + count - 1)

    low, high = 0, len(lines)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(first(middle)):
            low = middle
        else:
            high = middle - 1
    return first(low) if low else None


def cut_text(text: str, fits: Callable[[str], bool]) -> str | None:
    """The longest prefix of `text` (to a line end when one is near) plus CUT_MARKER that fits."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(text[:middle] + CUT_MARKER):
            low = middle
        else:
            high = middle - 1
    prefix = text[:low].rstrip()
    line_end = prefix.rfind("\n")
    if line_end > len(prefix) // 2:
        prefix = prefix[:line_end]
    return prefix + CUT_MARKER if prefix else None


def _clean(text: str) -> str:
    """A summary as it goes in the context: no blank lines, no code fences (a summary cut by
    max_tokens would leave one open and swallow the rest of the prompt)."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    kept = [line for line in lines if line.strip() and not _FENCE.match(line)]
    return "\n".join(kept) or EMPTY_SUMMARY


def _covered(items: Sequence[_Item]) -> tuple[ContextPiece, ...]:
    return tuple(piece for item in items for piece in item.pieces)


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


class _LinkedToken(CancellationToken):
    """Cancelled on its own or when its parent is; cancelling it leaves the parent alone."""

    def __init__(self, parent: CancellationToken | None) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return super().cancelled or (self._parent is not None and self._parent.cancelled)


def _check(cancel: CancellationToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise Cancelled("context compression was cancelled")
