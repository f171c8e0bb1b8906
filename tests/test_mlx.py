"""MLXBackend against a tiny random llama built here, offline, once per session.

Random weights produce gibberish, so these tests check mechanics (batching, sampling, stops,
streaming, cancellation, errors), never content.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mlx.core", reason='mlx is not installed (pip install "swarm-lsp[mlx]")')
pytest.importorskip("mlx_lm", reason='mlx-lm is not installed (pip install "swarm-lsp[mlx]")')
pytest.importorskip("tokenizers", reason="tokenizers (an mlx-lm dependency) is not installed")

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import (
    GREEDY,
    Backend,
    BackendUnavailable,
    Candidate,
    ContextOverflow,
    GenerationRequest,
    GenerationTimeout,
    Message,
    ModelNotFound,
    Sampling,
)
from swarm_lsp.models.mlx import MLXBackend
from swarm_lsp.models.stops import find_stop, stop_prefix_length

CONTEXT_LENGTH = 512
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "Explain what this function does and why it returns early.",
]
HOT = Sampling(temperature=2.0, top_p=1.0, top_k=0, seed=11)


# --- the tiny model --------------------------------------------------------------------------


def _write_tokenizer(directory: Path) -> tuple[int, int]:
    """A byte-level BPE tokenizer with a chat template; returns (vocab size, eos id)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT * 10, trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|eos|>",
        "pad_token": "<|pad|>",
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tokenizer.get_vocab_size(), tokenizer.token_to_id("<|eos|>")


def _write_model(directory: Path, vocab_size: int, eos_id: int) -> None:
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": CONTEXT_LENGTH,
        # Untied: a tied head makes a random model repeat its input token forever.
        "tie_word_embeddings": False,
        "eos_token_id": eos_id,
    }
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # A zero row gives end-of-sequence a logit of 0, below the best of the other random logits,
    # so greedy decoding never stops early and max_tokens ends it; sampling still can stop.
    model.lm_head.weight[eos_id] = 0.0
    save_model(directory, model)
    save_config(config, directory / "config.json")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama-mlx")
    vocab_size, eos_id = _write_tokenizer(directory)
    _write_model(directory, vocab_size, eos_id)
    return directory


@pytest.fixture(scope="session")
def backend(tiny_model_dir: Path) -> Iterator[MLXBackend]:
    loaded = MLXBackend(tiny_model_dir, max_parallel=8)
    yield loaded
    asyncio.run(loaded.aclose())


@pytest.fixture(scope="session")
def greedy_reference(backend: MLXBackend) -> Candidate:
    """One greedy candidate of 30 tokens for the standard prompt."""
    [candidate] = asyncio.run(backend.generate(request(n=1, sampling=GREEDY, max_tokens=30)))
    return candidate


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "messages": [Message("system", "Be brief."), Message("user", "def add(a, b):")],
        "max_tokens": 20,
    }
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def _copy_with_config(source: Path, target: Path, **config_changes: object) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


# --- loading and info ------------------------------------------------------------------------


def test_backend_describes_itself(backend: MLXBackend) -> None:
    assert isinstance(backend, Backend)
    info = backend.info
    assert info.backend == "mlx"
    assert info.context_length == CONTEXT_LENGTH  # from config.json max_position_embeddings
    assert info.max_parallel == 8
    assert "mlx-lm" in info.detail


def test_a_missing_directory_is_model_not_found_with_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFound) as error:
        MLXBackend(missing)
    assert str(missing) in str(error.value)
    assert "swarm-lsp doctor" in str(error.value)
    assert "swarm-lsp models pull" in str(error.value)


def test_a_hub_id_is_not_downloaded() -> None:
    with pytest.raises(ModelNotFound):
        MLXBackend("mlx-community/SmolLM2-135M-Instruct-does-not-exist")


def test_a_directory_without_config_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        MLXBackend(tmp_path)


def test_context_length_can_be_set(tiny_model_dir: Path) -> None:
    assert MLXBackend(tiny_model_dir, context_length=128).info.context_length == 128


# --- candidates and sampling -----------------------------------------------------------------


async def test_n_candidates_come_back_in_index_order(backend: MLXBackend) -> None:
    candidates = await backend.generate(request(n=4, sampling=HOT))
    assert [c.index for c in candidates] == [0, 1, 2, 3]
    for candidate in candidates:
        assert candidate.backend == "mlx"
        assert candidate.finish_reason in ("stop", "length")
        assert 1 <= candidate.completion_tokens <= 20
        assert candidate.prompt_tokens > 0
        assert candidate.sampling.seed == HOT.seed + candidate.index


async def test_greedy_candidates_in_a_batch_match_each_other_and_a_single_run(
    backend: MLXBackend, greedy_reference: Candidate
) -> None:
    candidates = await backend.generate(request(n=4, sampling=GREEDY, max_tokens=30))
    assert {c.text for c in candidates} == {greedy_reference.text}
    assert greedy_reference.text  # random weights still produce some text


async def test_more_candidates_than_parallel_slots_wait_for_a_free_slot(
    tiny_model_dir: Path, greedy_reference: Candidate
) -> None:
    narrow = MLXBackend(tiny_model_dir, max_parallel=2)
    try:
        candidates = await narrow.generate(request(n=5, sampling=GREEDY, max_tokens=30))
    finally:
        await narrow.aclose()
    assert [c.index for c in candidates] == [0, 1, 2, 3, 4]
    assert {c.text for c in candidates} == {greedy_reference.text}


async def test_the_same_seed_reproduces_and_different_seeds_differ(backend: MLXBackend) -> None:
    first = await backend.generate(request(n=4, sampling=HOT))
    again = await backend.generate(request(n=4, sampling=HOT))
    assert [c.text for c in first] == [c.text for c in again]
    # n=4 from one Sampling means seeds 11..14: at temperature 2 they cannot all agree.
    assert len({c.text for c in first}) > 1


async def test_each_candidate_keeps_its_own_sampling(
    backend: MLXBackend, greedy_reference: Candidate
) -> None:
    mixed = [GREEDY, HOT, GREEDY, Sampling(temperature=0.8, top_p=0.9, top_k=20, seed=3)]
    candidates = await backend.generate(request(n=4, sampling=mixed, max_tokens=30))
    assert [c.sampling for c in candidates] == mixed
    assert candidates[0].text == candidates[2].text == greedy_reference.text
    assert candidates[1].text != greedy_reference.text


# --- how candidates end ----------------------------------------------------------------------


async def test_max_tokens_ends_with_length(backend: MLXBackend) -> None:
    [candidate] = await backend.generate(request(sampling=GREEDY, max_tokens=5))
    assert candidate.finish_reason == "length"
    assert candidate.completion_tokens == 5


async def test_end_of_sequence_ends_with_stop_and_is_not_in_the_text(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Declaring every token an end-of-sequence token makes the first sampled token end it.
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    all_stop = _copy_with_config(
        tiny_model_dir, tmp_path / "all-stop", eos_token_id=list(range(config["vocab_size"]))
    )
    stopping = MLXBackend(all_stop)
    try:
        candidates = await stopping.generate(request(n=2, sampling=HOT))
    finally:
        await stopping.aclose()
    for candidate in candidates:
        assert candidate.finish_reason == "stop"
        assert candidate.text == ""
        assert candidate.completion_tokens == 1


async def test_a_stop_string_trims_the_text(backend: MLXBackend, greedy_reference: Candidate) -> None:
    stop = greedy_reference.text[8:11]
    expected = greedy_reference.text[: greedy_reference.text.find(stop)]
    pieces: list[str] = []
    [candidate] = await backend.generate(
        request(sampling=GREEDY, max_tokens=30, stop=[stop], on_token=lambda _, piece: pieces.append(piece))
    )
    assert candidate.finish_reason == "stop"
    assert candidate.text == expected
    assert "".join(pieces) == expected  # text up to a stop string's start was held back, not sent


async def test_streamed_pieces_concatenate_to_each_text(backend: MLXBackend) -> None:
    pieces: dict[int, list[str]] = defaultdict(list)
    candidates = await backend.generate(
        request(n=4, sampling=HOT, max_tokens=40, stop=["e"], on_token=lambda i, p: pieces[i].append(p))
    )
    for candidate in candidates:
        assert "".join(pieces[candidate.index]) == candidate.text
        assert "e" not in candidate.text


async def test_a_prompt_that_does_not_fit_is_context_overflow(backend: MLXBackend) -> None:
    with pytest.raises(ContextOverflow, match="context of 512"):
        await backend.generate(request(max_tokens=CONTEXT_LENGTH))


# --- cancellation and deadlines --------------------------------------------------------------


async def test_a_cancelled_token_stops_every_candidate(backend: MLXBackend) -> None:
    token = CancellationToken()

    def cancel_on_first_text(index: int, piece: str) -> None:
        token.cancel()

    candidates = await backend.generate(
        request(n=3, sampling=HOT, max_tokens=400, cancel=token, on_token=cancel_on_first_text)
    )
    assert all(c.finish_reason in ("cancelled", "stop") for c in candidates)
    assert any(c.finish_reason == "cancelled" for c in candidates)
    assert all(c.completion_tokens < 400 for c in candidates)


async def test_a_token_cancelled_before_the_start_produces_nothing(backend: MLXBackend) -> None:
    token = CancellationToken()
    token.cancel()
    candidates = await backend.generate(request(n=2, cancel=token))
    assert [(c.finish_reason, c.text, c.completion_tokens) for c in candidates] == [("cancelled", "", 0)] * 2


async def test_cancelling_the_task_raises_and_leaves_the_backend_usable(
    backend: MLXBackend, greedy_reference: Candidate
) -> None:
    loop = asyncio.get_running_loop()
    text_arrived = asyncio.Event()
    task = asyncio.create_task(
        backend.generate(
            request(
                n=2,
                sampling=HOT,
                max_tokens=400,
                on_token=lambda i, p: loop.call_soon_threadsafe(text_arrived.set),
            )
        )
    )
    await text_arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [after] = await backend.generate(request(sampling=GREEDY, max_tokens=30))
    assert after.text == greedy_reference.text


async def test_concurrent_requests_take_turns_without_mixing(
    backend: MLXBackend, greedy_reference: Candidate
) -> None:
    greedy, hot = await asyncio.gather(
        backend.generate(request(n=2, sampling=GREEDY, max_tokens=30)),
        backend.generate(request(n=2, sampling=HOT)),
    )
    hot_alone = await backend.generate(request(n=2, sampling=HOT))
    assert {c.text for c in greedy} == {greedy_reference.text}
    assert [c.text for c in hot] == [c.text for c in hot_alone]


async def test_a_passed_deadline_raises_timeout_with_partial_candidates(backend: MLXBackend) -> None:
    with pytest.raises(GenerationTimeout) as error:
        await backend.generate(request(n=3, sampling=HOT, timeout=0.0))
    assert [c.index for c in error.value.partial] == [0, 1, 2]
    assert {c.finish_reason for c in error.value.partial} == {"timeout"}


async def test_a_closed_backend_refuses_work(tiny_model_dir: Path) -> None:
    closing = MLXBackend(tiny_model_dir)
    await closing.aclose()
    await closing.aclose()  # idempotent
    with pytest.raises(BackendUnavailable, match="closed"):
        await closing.generate(request())


# --- stop-string helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stops", "start", "expected"),
    [
        ("hello world", ["o"], 0, 4),
        ("hello world", ["wor", "ll"], 0, 2),
        ("hello world", ["o"], 5, 7),
        ("hello", ["x"], 0, None),
        ("hello", [], 0, None),
    ],
)
def test_find_stop(text: str, stops: list[str], start: int, expected: int | None) -> None:
    assert find_stop(text, stops, start) == expected


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("abc", ["cde"], 1),
        ("abcd", ["cde", "bcdx"], 3),
        ("abc", ["x"], 0),
        ("abc", ["abc"], 0),  # a whole stop string is found, never held back
        ("", ["abc"], 0),
    ],
)
def test_stop_prefix_length(text: str, stops: list[str], expected: int) -> None:
    assert stop_prefix_length(text, stops) == expected
