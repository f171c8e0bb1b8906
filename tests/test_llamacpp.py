"""LlamaCppBackend against the real bundled model (SmolLM2-135M-Instruct): no mocks, no timing asserts."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import (
    GREEDY,
    Backend,
    BackendUnavailable,
    ContextOverflow,
    GenerationRequest,
    GenerationTimeout,
    Message,
    ModelError,
    ModelNotFound,
    Sampling,
)
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.models.llamacpp.decoding import CandidateText, PromptLookup, common_prefix

pytestmark = pytest.mark.slow

N_CTX = 2048
PRIME = [Message("user", "Write a Python function that checks whether a number is prime.")]
COUNTING = [Message("user", "Write the numbers from 1 to 1000, separated by commas.")]
"""Greedy decoding of this prompt runs to max_tokens: long enough to cancel or time out."""
WARM = Sampling(temperature=0.9, top_p=0.95, top_k=40, seed=7)
CODE = '''def add(a, b):
    """Return the sum of a and b."""
    result = a + b
    return result


def scale(values, factor):
    """Multiply every value by factor."""
    return [value * factor for value in values]
'''
REWRITE = [
    Message(
        "user",
        "Rewrite this Python code exactly as it is, but rename the function `add` to `plus`:\n"
        f"```python\n{CODE}```",
    )
]


@pytest.fixture(scope="module")
def backend(bundled_gguf: Path):
    # One loaded model for the module: created synchronously so every test's own event loop can
    # use it (the backend holds no loop-bound state).
    loaded = LlamaCppBackend(bundled_gguf, n_ctx=N_CTX, n_seq_max=6, generation_reserve=256)
    yield loaded
    loaded.close()


def request(messages=PRIME, **options) -> GenerationRequest:
    options.setdefault("sampling", GREEDY)
    options.setdefault("max_tokens", 48)
    return GenerationRequest(messages=messages, **options)


async def test_info_describes_the_loaded_model(backend: LlamaCppBackend):
    assert isinstance(backend, Backend)
    info = backend.info
    assert info.backend == "llama.cpp"
    assert "SmolLM2-135M" in info.model
    assert info.context_length == N_CTX == backend.context_length
    assert info.max_parallel == 6
    assert backend.context_length_trained == backend.n_ctx_train == 8192
    assert backend.kv_cells >= N_CTX + 5 * 256


async def test_batched_greedy_candidates_equal_single_runs(backend: LlamaCppBackend):
    single = await backend.generate(request(max_tokens=56))
    batched = await backend.generate(request(n=5, max_tokens=56))

    assert [c.index for c in batched] == [0, 1, 2, 3, 4]
    for candidate in batched:
        assert candidate.text == single[0].text
        assert candidate.completion_tokens == single[0].completion_tokens
        assert candidate.prompt_tokens == single[0].prompt_tokens
        assert candidate.backend == "llama.cpp"
    assert backend.last_stats is not None and backend.last_stats.waves == 1


async def test_sampled_candidates_differ_by_seed_and_reproduce(backend: LlamaCppBackend):
    first = await backend.generate(request(n=3, sampling=WARM, max_tokens=40))
    again = await backend.generate(request(n=3, sampling=WARM, max_tokens=40))

    assert [c.sampling.seed for c in first] == [7, 8, 9]
    assert len({c.text for c in first}) > 1
    assert [c.text for c in again] == [c.text for c in first]
    # Decoding in a batch does not change a candidate: alone, candidate 2 says the same.
    alone = await backend.generate(request(sampling=[first[2].sampling], max_tokens=40))
    assert alone[0].text == first[2].text


async def test_stop_string_cuts_the_text_before_it(backend: LlamaCppBackend):
    full = (await backend.generate(request(max_tokens=48)))[0].text
    stop = "return False"
    assert stop in full, full

    streamed: list[str] = []
    [candidate] = await backend.generate(
        request(max_tokens=48, stop=[stop], on_token=lambda _i, piece: streamed.append(piece))
    )
    assert candidate.finish_reason == "stop"
    assert candidate.text == full[: full.index(stop)]
    assert "".join(streamed) == candidate.text


async def test_max_tokens_finishes_with_length(backend: LlamaCppBackend):
    [candidate] = await backend.generate(request(max_tokens=5))
    assert candidate.finish_reason == "length"
    assert candidate.completion_tokens == 5
    assert candidate.text


async def test_streamed_pieces_concatenate_to_each_final_text(backend: LlamaCppBackend):
    pieces: dict[int, list[str]] = defaultdict(list)
    candidates = await backend.generate(
        request(n=3, sampling=WARM, max_tokens=40, on_token=lambda i, piece: pieces[i].append(piece))
    )
    for candidate in candidates:
        assert "".join(pieces[candidate.index]) == candidate.text


async def test_multibyte_characters_split_across_tokens_stream_cleanly(backend: LlamaCppBackend):
    original = "naïve café — 你好, 世界 🙂🚀 ok"
    tokens = backend.tokenize(original)
    assert len(tokens) > len(original.split())  # byte-level BPE splits these characters

    text = CandidateText(stops=())
    streamed = "".join(text.add(backend._piece(token)) for token in tokens) + text.flush()
    assert streamed == original == text.text


def test_text_that_may_start_a_stop_string_is_held_back_until_clear():
    text = CandidateText(stops=["</answer>"])
    assert text.add(b"x < y </") == "x < y "
    assert text.add(b"b> and ") == "</b> and "  # a false alarm is released
    assert text.add(b"</ans") == ""
    assert text.add(b"wer> trailing") == ""
    assert text.stopped and text.text == "x < y </b> and "
    assert text.flush() == ""


def test_prompt_lookup_drafts_what_followed_the_latest_match():
    prompt = [1, 2, 3, 4, 5, 9, 1, 2]
    lookup = PromptLookup(prompt, PromptLookup.index(prompt))
    assert lookup.draft(3) == [3, 4, 5]  # after the bigram (1, 2)
    lookup.append(7)
    assert lookup.draft(3) == []  # 7 was never seen
    lookup.append(1)
    lookup.append(2)
    assert lookup.draft(2) == [7, 1]  # the latest (1, 2) is now the one in the output


async def test_cancellation_token_stops_within_one_step(backend: LlamaCppBackend):
    token = CancellationToken()
    candidates = await backend.generate(
        request(n=2, max_tokens=64, cancel=token, on_token=lambda _i, _piece: token.cancel())
    )
    for candidate in candidates:
        assert candidate.finish_reason == "cancelled"
        assert 1 <= candidate.completion_tokens <= 2
        assert candidate.text  # the partial text comes back


async def test_task_cancellation_raises_and_leaves_the_backend_usable(backend: LlamaCppBackend):
    expected = (await backend.generate(request(max_tokens=24)))[0].text
    loop = asyncio.get_running_loop()
    producing = asyncio.Event()
    long_request = request(
        COUNTING, n=2, max_tokens=400, on_token=lambda _i, _p: loop.call_soon_threadsafe(producing.set)
    )

    task = asyncio.create_task(backend.generate(long_request))
    await producing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert backend.last_stats is not None
    assert backend.last_stats.generated_tokens < 2 * 400
    assert (await backend.generate(request(max_tokens=24)))[0].text == expected


async def test_timeout_raises_with_the_partial_candidates(backend: LlamaCppBackend):
    with pytest.raises(GenerationTimeout) as raised:
        await backend.generate(request(COUNTING, n=2, max_tokens=1500, timeout=0.5))
    partial = raised.value.partial
    assert [c.index for c in partial] == [0, 1]
    assert all(c.finish_reason == "timeout" for c in partial)
    # The backend is consistent afterwards.
    [after] = await backend.generate(request(max_tokens=8))
    assert after.finish_reason == "length"


async def test_shared_prefix_is_reused_and_gives_the_cold_output(backend: LlamaCppBackend):
    backend.reset_cache()
    review = [Message("system", f"You review this module:\n```python\n{CODE}```"), *PRIME]
    first_turn = await backend.generate(request(review, max_tokens=32))
    second_turn = [
        *review,
        Message("assistant", first_turn[0].text),
        Message("user", "Now make it faster for large numbers."),
    ]
    first_prompt = backend.prompt_tokens(review)
    second_prompt = backend.prompt_tokens(second_turn)
    assert second_prompt[: len(first_prompt)] == first_prompt

    warm = await backend.generate(request(second_turn, max_tokens=40))
    stats = backend.last_stats
    assert stats is not None
    # Reuse keeps whole 64-token evaluation chunks possible: the last 64 tokens are always evaluated.
    assert stats.reused_tokens == min(len(first_prompt), len(second_prompt) - 64) > 0
    assert stats.evaluated_prompt_tokens == len(second_prompt) - stats.reused_tokens

    backend.reset_cache()
    cold = await backend.generate(request(second_turn, max_tokens=40))
    assert backend.last_stats is not None and backend.last_stats.reused_tokens == 0
    assert cold[0].text == warm[0].text

    # The same prompt again: all but the last 64 tokens come from the cache.
    again = await backend.generate(request(second_turn, max_tokens=40))
    assert backend.last_stats is not None
    assert backend.last_stats.reused_tokens == len(second_prompt) - 64
    assert again[0].text == cold[0].text


async def test_a_raw_prompt_continues_text_and_reuses_its_whole_prefix(backend: LlamaCppBackend):
    backend.reset_cache()
    source = CODE + "\n\ndef double(value):\n    return value *"

    def raw(text: str) -> GenerationRequest:
        return GenerationRequest(
            messages=[], prompt=text, sampling=GREEDY, max_tokens=6, stop=["\n"], reuse_whole_prefix=True
        )

    [first] = await backend.generate(raw(source))
    assert first.finish_reason in ("stop", "length")
    assert first.prompt_tokens == len(backend.request_tokens(raw(source)))  # no chat template around it
    # One more character typed: everything but the prompt's last token comes from the cache.
    [typed] = await backend.generate(raw(source + " 2"))
    stats = backend.last_stats
    assert stats is not None and stats.evaluated_prompt_tokens <= 2
    assert stats.reused_tokens == stats.prompt_tokens - stats.evaluated_prompt_tokens
    assert typed.text is not None
    assert backend.info.fim is None  # the bundled GGUF declares no fill-in-the-middle tokens


async def test_prompt_lookup_gives_the_plain_greedy_output(backend: LlamaCppBackend):
    plain = await backend.generate(request(REWRITE, max_tokens=80))

    speculative_one = await backend.generate(request(REWRITE, max_tokens=80, prompt_lookup=True))
    stats = backend.last_stats
    assert stats is not None and stats.accepted_draft_tokens > 0
    assert stats.steps < speculative_one[0].completion_tokens
    assert speculative_one[0].text == plain[0].text

    speculative_batch = await backend.generate(request(REWRITE, n=3, max_tokens=80, prompt_lookup=True))
    assert [c.text for c in speculative_batch] == [plain[0].text] * 3


async def test_prompt_lookup_keeps_sampled_output(backend: LlamaCppBackend):
    plain = await backend.generate(request(REWRITE, n=2, sampling=WARM, max_tokens=48))
    speculative = await backend.generate(
        request(REWRITE, n=2, sampling=WARM, max_tokens=48, prompt_lookup=True)
    )
    assert [c.text for c in speculative] == [c.text for c in plain]


async def test_prompt_longer_than_the_window_raises_context_overflow(backend: LlamaCppBackend):
    too_long = [Message("user", "word " * (N_CTX + 100))]
    with pytest.raises(ContextOverflow, match="context window"):
        await backend.generate(request(too_long))
    with pytest.raises(ContextOverflow):
        await backend.generate(request(max_tokens=N_CTX))


async def test_more_candidates_than_sequences_run_in_waves(bundled_gguf: Path):
    small = LlamaCppBackend(bundled_gguf, n_ctx=512, n_seq_max=2, generation_reserve=64)
    try:
        single = await small.generate(request(max_tokens=24))
        waves = await small.generate(request(n=5, max_tokens=24))
        assert small.last_stats is not None and small.last_stats.waves == 3
        assert [c.index for c in waves] == [0, 1, 2, 3, 4]
        assert all(c.text == single[0].text for c in waves)

        sampled = await small.generate(request(n=3, sampling=WARM, max_tokens=24))
        alone = await small.generate(request(sampling=[sampled[2].sampling], max_tokens=24))
        assert sampled[2].sampling.seed == WARM.seed + 2
        assert alone[0].text == sampled[2].text
    finally:
        await small.aclose()


SHARED = Message(
    "system", "You answer in one short sentence. " + "The project parses, indexes and votes. " * 12
)
YELLOW = [SHARED, Message("user", "Name a fruit that is yellow.")]
GREEN = [SHARED, Message("user", "Name a vegetable that is green and long, often used in salads.")]


async def test_variants_share_the_prompt_and_answer_their_own_ending(backend: LlamaCppBackend):
    alone = (await backend.generate(request(YELLOW, max_tokens=24)))[0]
    # GREEN alone, its tail evaluated on top of YELLOW's cached prefix: what its variant computes.
    own_alone = (await backend.generate(request(GREEN, max_tokens=24, reuse_whole_prefix=True)))[0]
    result = await backend.generate(request(YELLOW, n=3, max_tokens=24, variants=[GREEN, GREEN, None]))
    stats = backend.last_stats
    # Candidate 0 decodes in sequence 0, which keeps the shared prompt: it reads no variant.
    assert result[0].text == alone.text == result[2].text
    assert result[1].text == own_alone.text != alone.text
    shared, own = backend.prompt_tokens(YELLOW), backend.prompt_tokens(GREEN)
    assert result[1].prompt_tokens == len(own) and result[0].prompt_tokens == len(shared)
    assert stats.variant_tokens == len(own) - common_prefix(shared, own) and stats.waves == 1
    # The same request gives the same candidates, and the cache still holds the shared prompt.
    again = await backend.generate(request(YELLOW, n=3, max_tokens=24, variants=[GREEN, GREEN, None]))
    assert [c.text for c in again] == [c.text for c in result]
    assert backend.last_stats.reused_tokens >= len(shared) - 64
    assert (await backend.generate(request(YELLOW, max_tokens=24)))[0].text == alone.text


async def test_a_wave_s_first_candidate_reads_the_shared_prompt(bundled_gguf: Path):
    small = LlamaCppBackend(bundled_gguf, n_ctx=512, n_seq_max=2, generation_reserve=64)
    try:
        alone = (await small.generate(request(YELLOW, max_tokens=16)))[0]
        waves = await small.generate(request(YELLOW, n=4, max_tokens=16, variants=[None, *[GREEN] * 3]))
        assert small.last_stats is not None and small.last_stats.waves == 2
        own = len(small.prompt_tokens(GREEN))
        assert [c.prompt_tokens == own for c in waves] == [False, True, False, True]
        assert waves[0].text == waves[2].text == alone.text
        assert waves[1].text == waves[3].text != alone.text
    finally:
        await small.aclose()


async def test_missing_model_raises_model_not_found_pointing_to_doctor(tmp_path: Path):
    with pytest.raises(ModelNotFound, match="swarm-lsp doctor") as raised:
        LlamaCppBackend(tmp_path / "absent.gguf")
    assert str(tmp_path / "absent.gguf") in str(raised.value)


async def test_a_file_that_is_not_a_model_raises_model_error(tmp_path: Path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"this is not a GGUF file" * 10)
    with pytest.raises(ModelError, match=r"fake\.gguf"):
        LlamaCppBackend(fake)


async def test_aclose_is_idempotent_and_refuses_later_requests(bundled_gguf: Path):
    closing = LlamaCppBackend(bundled_gguf, n_ctx=256, n_seq_max=1)
    await closing.aclose()
    await closing.aclose()
    with pytest.raises(BackendUnavailable):
        await closing.generate(request(max_tokens=4))
