"""Map-reduce context compression: the budget math with stubs, then the real bundled model."""

from __future__ import annotations

import dataclasses
import json.decoder
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from swarm_lsp.basics import CancellationToken
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.models.base import (
    GREEDY,
    BackendInfo,
    Candidate,
    ContextOverflow,
    GenerationRequest,
    ModelError,
)
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.swarm.compression import (
    INSTRUCTIONS,
    SUMMARY_HEADER,
    Budget,
    fit_context,
    plan_groups,
    render,
    split_verbatim,
    summary_length,
)
from swarm_lsp.swarm.context import ContextPack, ContextPiece
from swarm_lsp.swarm.engine import Cancelled

QUESTION = "How does the JSON decoder turn backslash escape sequences in a string into characters?"


def words(text: str) -> int:
    """The stub token count: one token per whitespace-separated word."""
    return len(text.split())


def word_piece(index: int, size: int = 40) -> ContextPiece:
    body = " ".join(f"w{index}_{j}" for j in range(size))
    return ContextPiece(f"pkg/mod{index}.py", 10 * index + 1, 10 * index + 10, body, None, "match")


class StubBackend:
    """Records requests and answers each with `reply(request)`, cut to max_tokens words.

    It has no tokenizer, so the compressor sizes its prompts with count_tokens and a margin.
    """

    def __init__(
        self,
        reply: Callable[[GenerationRequest], str] = lambda request: "- the point",
        *,
        window: int = 400,
        honour_max_tokens: bool = True,
    ) -> None:
        self.reply = reply
        self.window = window
        self.honour_max_tokens = honour_max_tokens
        self.requests: list[GenerationRequest] = []

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("stub", "stub", self.window, 4)

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        self.requests.append(request)
        text = self.reply(request)
        if self.honour_max_tokens:
            text = " ".join(text.split()[: request.max_tokens])
        finish = "cancelled" if request.cancel is not None and request.cancel.cancelled else "stop"
        return [Candidate(0, text, finish, GREEDY)]

    async def aclose(self) -> None:
        pass


def stage_of(request: GenerationRequest) -> str:
    user = request.messages[-1].content
    return "reduce" if INSTRUCTIONS["reduce"] in user else "map"


def assert_within(result, budget: Budget, count_tokens=words) -> None:
    assert count_tokens(result.context) <= budget.context_tokens
    assert result.tokens_out == count_tokens(result.context)


# ---------------------------------------------------------------------------------- pure math


def test_budget_is_the_window_less_answer_and_prompt() -> None:
    assert Budget.for_backend(1024, 128, 96).context_tokens == 800
    assert Budget(window=100, answer_tokens=80, prompt_overhead=40).context_tokens == 0
    with pytest.raises(ValueError, match="context length"):
        Budget.for_backend(0, 10, 10)
    with pytest.raises(ValueError, match="negative"):
        Budget.for_backend(1024, -1, 10)


def test_groups_are_consecutive_and_within_capacity() -> None:
    costs = [3, 3, 3, 5, 1, 6]
    groups = plan_groups(costs, 6)
    assert groups == [[0, 1], [2], [3, 4], [5]]
    assert [index for group in groups for index in group] == list(range(len(costs)))
    assert all(sum(costs[index] for index in group) <= 6 for group in groups)
    assert plan_groups([], 6) == []
    with pytest.raises(ValueError, match="more than a group holds"):
        plan_groups([2, 7], 6)


def test_verbatim_pieces_are_taken_in_rank_order_up_to_the_limit() -> None:
    pieces = [word_piece(0, 4), word_piece(1, 10), word_piece(2, 3), word_piece(3, 2)]
    kept, rest = split_verbatim(pieces, 8, lambda piece: words(piece.text))
    assert kept == [pieces[0], pieces[2]]  # the 10-word piece does not fit; a later, smaller one does
    assert rest == [pieces[1], pieces[3]]


def test_summary_length_shares_the_room_but_never_exceeds_the_request() -> None:
    assert summary_length(100, [10, 10], 96) == 40
    assert summary_length(100, [10, 10], 32) == 32
    # An even share too small to say anything: write full summaries and reduce them later.
    assert summary_length(100, [10] * 8, 96) == 96
    assert summary_length(100, [], 48) == 48


# ------------------------------------------------------------------------- stubbed backend


async def test_a_pack_that_fits_is_returned_unchanged_without_a_request() -> None:
    pack = ContextPack("q", [word_piece(i, 10) for i in range(3)])
    backend = StubBackend()
    result = await fit_context(pack, "q", Budget(400, 50, 50), backend, count_tokens=words)
    assert not result.compressed
    assert result.context == pack.render()
    assert result.citations == pack.citations
    assert (result.pieces_verbatim, result.pieces_summarised) == (3, 0)
    assert result.tokens_in == result.tokens_out == words(pack.render())
    assert backend.requests == []


async def test_compression_keeps_top_pieces_and_cites_every_summarised_piece() -> None:
    pack = ContextPack("q", [word_piece(i) for i in range(12)])
    budget = Budget(window=400, answer_tokens=50, prompt_overhead=50)
    backend = StubBackend()
    assert words(pack.render()) > budget.context_tokens

    result = await fit_context(
        pack, "what does mod3 do?", budget, backend, count_tokens=words, summary_tokens=32
    )

    assert result.compressed
    assert_within(result, budget)
    # The most relevant pieces verbatim, up to 40% of the budget: two 45-word pieces.
    assert result.pieces_verbatim == 2
    assert result.context.startswith(render(pack.pieces[:2]))
    assert result.pieces_summarised == 10
    assert result.citations == pack.citations
    summaries = result.context.split(SUMMARY_HEADER, 1)[1]
    for piece in pack.pieces[2:]:
        assert piece.citation in summaries  # re-attached: the stub's replies carry no citations
    assert "exceeds the 300-token budget" in result.notes[0]
    # Map groups: several pieces each, every prompt within the window, question before the code.
    assert 1 < len(backend.requests) < 10
    for request in backend.requests:
        user = request.messages[-1].content
        assert user.startswith("Question: what does mod3 do?")
        assert sum(words(m.content) for m in request.messages) + request.max_tokens <= budget.window
        assert request.sampling == GREEDY
        assert request.max_tokens <= 32
    prompts = " ".join(request.messages[-1].content for request in backend.requests)
    assert all(piece.citation in prompts for piece in pack.pieces[2:])


async def test_summaries_that_exceed_the_budget_are_reduced_again() -> None:
    pack = ContextPack("q", [word_piece(i, 30) for i in range(30)])
    budget = Budget(window=400, answer_tokens=150, prompt_overhead=50)
    backend = StubBackend(lambda request: " ".join(["detail"] * 100))

    result = await fit_context(pack, "q", budget, backend, count_tokens=words, summary_tokens=32)

    assert_within(result, budget)
    stages = [stage_of(request) for request in backend.requests]
    assert "reduce" in stages
    assert stages.index("reduce") > stages.count("map") - 1  # map pass first, then reduce
    assert any("reduced from" in note for note in result.notes)
    # A reduced summary still carries every citation of the pieces under it.
    for citation in result.citations:
        assert citation in result.context
    assert result.pieces_verbatim + result.pieces_summarised == len(pack.pieces)


async def test_a_backend_ignoring_max_tokens_is_cut_to_the_budget_with_a_note() -> None:
    pack = ContextPack("q", [word_piece(i, 30) for i in range(20)])
    budget = Budget(window=400, answer_tokens=150, prompt_overhead=50)
    backend = StubBackend(lambda request: " ".join(["long"] * 500), honour_max_tokens=False)

    result = await fit_context(pack, "q", budget, backend, count_tokens=words, summary_tokens=32)

    assert_within(result, budget)
    assert any("cut to fit the budget" in note or "dropped the summaries" in note for note in result.notes)
    # What was dropped is no longer cited; what is cited is still in the context.
    for citation in result.citations:
        assert citation in result.context
    assert result.pieces_verbatim + result.pieces_summarised <= len(pack.pieces)


async def test_a_request_the_server_finds_too_long_is_split() -> None:
    def reply(request: GenerationRequest) -> str:
        if request.messages[-1].content.count("--- pkg/") > 1:
            raise ContextOverflow("prompt too long")
        return "- fine"

    pack = ContextPack("q", [word_piece(i) for i in range(12)])
    budget = Budget(window=400, answer_tokens=50, prompt_overhead=50)
    result = await fit_context(pack, "q", budget, StubBackend(reply), count_tokens=words, summary_tokens=32)

    assert_within(result, budget)
    assert result.pieces_summarised == 10
    assert result.context.count("from pkg/") == 10  # one summary per piece after the splits


async def test_a_failing_backend_falls_back_to_the_pieces_that_fit() -> None:
    def reply(request: GenerationRequest) -> str:
        raise ModelError("the server is gone")

    cancel = CancellationToken()
    pack = ContextPack("q", [word_piece(i) for i in range(12)])
    budget = Budget(window=400, answer_tokens=50, prompt_overhead=50)
    result = await fit_context(pack, "q", budget, StubBackend(reply), count_tokens=words, cancel=cancel)

    assert result.compressed
    assert_within(result, budget)
    assert "summarisation failed (the server is gone)" in result.notes[0]
    assert result.pieces_summarised == 0
    assert result.pieces_verbatim == 6  # 6 x 46 words within 300; the whole budget, not 40% of it
    assert result.context == render(pack.pieces[:6])
    assert not cancel.cancelled  # stopping the other requests must not cancel the caller


async def test_a_window_too_small_to_summarise_in_keeps_what_fits() -> None:
    pack = ContextPack("q", [word_piece(i) for i in range(12)])
    budget = Budget(window=140, answer_tokens=0, prompt_overhead=0)
    backend = StubBackend(window=140)
    result = await fit_context(pack, "q", budget, backend, count_tokens=words, summary_tokens=32)
    assert_within(result, budget)
    assert "too small to summarise in" in result.notes[0]
    assert backend.requests == []


async def test_a_budget_with_no_room_gives_an_empty_context() -> None:
    pack = ContextPack("q", [word_piece(i) for i in range(3)])
    backend = StubBackend()
    result = await fit_context(pack, "q", Budget(400, 300, 100), backend, count_tokens=words)
    assert (result.context, result.citations, result.tokens_out) == ("", [], 0)
    assert result.compressed
    assert "no room" in result.notes[0]
    assert backend.requests == []


async def test_cancellation_before_and_between_requests() -> None:
    pack = ContextPack("q", [word_piece(i) for i in range(12)])
    budget = Budget(window=400, answer_tokens=50, prompt_overhead=50)

    cancel = CancellationToken()
    cancel.cancel()
    backend = StubBackend()
    with pytest.raises(Cancelled):
        await fit_context(pack, "q", budget, backend, count_tokens=words, cancel=cancel)
    assert backend.requests == []

    cancel = CancellationToken()

    def cancel_on_first(request: GenerationRequest) -> str:
        cancel.cancel()
        return "- partial"

    backend = StubBackend(cancel_on_first)
    with pytest.raises(Cancelled):
        await fit_context(pack, "q", budget, backend, count_tokens=words, cancel=cancel)
    assert len(backend.requests) == 1


# ------------------------------------------------------------------------- the bundled model

N_CTX = 1024


class Recording:
    """A real backend that records its requests and candidates."""

    def __init__(self, inner: LlamaCppBackend) -> None:
        self.inner = inner
        self.requests: list[GenerationRequest] = []
        self.candidates: list[Candidate] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        self.requests.append(request)
        result = await self.inner.generate(request)
        self.candidates.extend(result)
        return result


class CancelsDuringTheFirstRequest(Recording):
    """Cancels as the first request's first token arrives, so the model is stopped mid-decoding."""

    def __init__(self, inner: LlamaCppBackend, cancel: CancellationToken) -> None:
        super().__init__(inner)
        self.cancel = cancel

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        self.requests.append(request)
        forward = request.on_token

        def on_token(index: int, text: str) -> None:
            self.cancel.cancel()
            if forward is not None:
                forward(index, text)

        result = await self.inner.generate(dataclasses.replace(request, on_token=on_token))
        self.candidates.extend(result)
        return result


def decoder_pack() -> ContextPack:
    """json/decoder.py in 15 chunks (~3,000 tokens), the ones about escapes ranked first."""
    lines = Path(json.decoder.__file__).read_text(encoding="utf-8").splitlines()
    size = -(-len(lines) // 15)
    pieces = [
        ContextPiece(
            "json/decoder.py",
            start + 1,
            min(start + size, len(lines)),
            "\n".join(lines[start : start + size]),
            None,
            "match",
        )
        for start in range(0, len(lines), size)
    ]

    def relevance(piece: ContextPiece) -> int:
        return -len(re.findall(r"escape|backslash|scanstring|\\\\u", piece.text, re.IGNORECASE))

    return ContextPack(QUESTION, sorted(pieces, key=relevance))


@pytest.fixture(scope="module")
def model(bundled_gguf: Path):
    # One thread: on two shared cores a second llama.cpp thread that waits for a busy core slows
    # every step many times over, and one thread loses little when the machine is quiet.
    loaded = LlamaCppBackend(bundled_gguf, n_ctx=N_CTX, n_seq_max=1, n_threads=1, generation_reserve=64)
    yield loaded
    loaded.close()


@pytest.mark.slow
async def test_the_bundled_model_compresses_a_pack_larger_than_its_window(model: LlamaCppBackend) -> None:
    pack = decoder_pack()
    assert len(pack.pieces) == 15
    assert 2500 <= estimate_tokens(pack.render()) <= 3500
    assert len(model.tokenize(pack.render())) > N_CTX  # larger than the whole window, not just the budget
    budget = Budget.for_backend(model.context_length, answer_tokens=128, prompt_overhead=96)
    backend = Recording(model)

    result = await fit_context(pack, QUESTION, budget, backend, summary_tokens=40)

    assert result.compressed
    assert_within(result, budget, estimate_tokens)
    assert result.tokens_in == estimate_tokens(pack.render())
    # The top pieces verbatim, exactly as the pack renders them.
    assert result.pieces_verbatim >= 1
    assert result.context.startswith(render(pack.pieces[:1]))
    # Every other piece is summarised under its citation.
    assert result.pieces_verbatim + result.pieces_summarised == 15
    summaries = result.context.split(SUMMARY_HEADER, 1)[1]
    verbatim = set(result.citations[: result.pieces_verbatim])
    for piece in pack.pieces:
        assert piece.citation in result.citations
        if piece.citation not in verbatim:
            assert piece.citation in summaries
    assert "exceeds the 800-token budget" in result.notes[0]
    # Every request fit the model window and finished.
    assert len(backend.requests) >= 2
    for request in backend.requests:
        assert len(model.prompt_tokens(request.messages)) + request.max_tokens <= N_CTX
    assert all(candidate.finish_reason in ("stop", "length") for candidate in backend.candidates)


@pytest.mark.slow
async def test_the_bundled_model_is_not_asked_when_the_pack_fits(model: LlamaCppBackend) -> None:
    pack = decoder_pack()
    pack.pieces = pack.pieces[:2]
    backend = Recording(model)
    result = await fit_context(pack, QUESTION, Budget.for_backend(N_CTX, 128, 96), backend)
    assert not result.compressed
    assert result.context == pack.render()
    assert backend.requests == []


@pytest.mark.slow
async def test_cancelling_stops_the_bundled_model_mid_compression(model: LlamaCppBackend) -> None:
    cancel = CancellationToken()
    backend = CancelsDuringTheFirstRequest(model, cancel)
    with pytest.raises(Cancelled):
        await fit_context(
            decoder_pack(),
            QUESTION,
            Budget.for_backend(N_CTX, 128, 96),
            backend,
            cancel=cancel,
            summary_tokens=40,
        )
    assert len(backend.requests) == 1  # the other groups were never sent
    assert [candidate.finish_reason for candidate in backend.candidates] == ["cancelled"]
