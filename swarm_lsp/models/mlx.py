"""The mlx-lm backend: one loaded model, n candidates decoded together in one batch.

On Apple Silicon mlx runs on the GPU; on Linux the CPU build of mlx is enough for tests.
The prompt is prefilled once and its KV cache is shared by every candidate; mlx-lm's
`BatchGenerator` then decodes one token per live candidate per step. We drive it step by step
(rather than calling `batch_generate`) because every step is where we stream text, check stop
strings, the cancellation token and the deadline.

This is the only module that imports mlx or mlx_lm, and it does so lazily, so importing
swarm_lsp never requires them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import (
    BackendInfo,
    BackendUnavailable,
    Candidate,
    ContextOverflow,
    Deadline,
    FinishReason,
    GenerationRequest,
    GenerationTimeout,
    Message,
    ModelError,
    ModelNotFound,
    Sampling,
    TokenCallback,
    run_cancellable,
)
from swarm_lsp.models.stops import find_stop, stop_prefix_length

BACKEND_NAME = "mlx"
INSTALL_HINT = 'pip install "swarm-lsp[mlx]"'
DEFAULT_CONTEXT_LENGTH = 4096
DEFAULT_MAX_PARALLEL = 8
PREFILL_STEP_TOKENS = 512
"""Prompt tokens evaluated per forward pass; between passes we check cancellation and the deadline."""

Sampler = Callable[[Any], Any]
"""mlx-lm's sampler shape: log-probabilities of shape (rows, vocab) -> token ids of shape (rows,)."""


# --- loading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mlx:
    """The mlx modules this backend uses, imported once on first use."""

    core: ModuleType
    lm: ModuleType
    generate: ModuleType
    sample_utils: ModuleType
    cache: ModuleType


def _import_mlx() -> _Mlx:
    try:
        import mlx.core as core
        import mlx_lm
        import mlx_lm.models.cache as cache
        import mlx_lm.sample_utils as sample_utils

        # Not `import mlx_lm.generate as ...`: the package's `generate` function shadows the module.
        generate = importlib.import_module("mlx_lm.generate")
    except (ImportError, OSError) as error:  # OSError: a wheel whose native library cannot load
        raise BackendUnavailable(
            f"the mlx backend needs the mlx and mlx-lm packages ({error}); install them with: {INSTALL_HINT}"
        ) from error
    return _Mlx(core=core, lm=mlx_lm, generate=generate, sample_utils=sample_utils, cache=cache)


def _check_model_directory(model_path: Path) -> None:
    """Fail early, with what to do, on anything that is not a local MLX model directory.

    A hub id must never reach mlx_lm's loader: it would try to download, and we are offline.
    """
    if not model_path.is_dir():
        raise ModelNotFound(
            f"MLX model directory not found: {model_path}. Give the path of a local directory in "
            "MLX/Hugging Face format (config.json, *.safetensors, tokenizer files); "
            "run `swarm-lsp doctor` to see the models found on this machine or "
            "`swarm-lsp models pull` to download one."
        )
    if not (model_path / "config.json").is_file():
        raise ModelNotFound(
            f"{model_path} is not an MLX model directory: it has no config.json. "
            "Run `swarm-lsp doctor` to see the models found on this machine."
        )
    if not any(model_path.glob("model*.safetensors")):
        raise ModelNotFound(
            f"{model_path} has no model*.safetensors weights. "
            "Run `swarm-lsp models pull` to download the model again."
        )


def _context_length_from_config(model_path: Path) -> int:
    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    # Multimodal checkpoints keep the language model's settings under text_config.
    for section in (config, config.get("text_config") or {}):
        length = section.get("max_position_embeddings")
        if isinstance(length, int) and length > 0:
            return length
    return DEFAULT_CONTEXT_LENGTH


# --- text: stop strings and streaming --------------------------------------------------------


@dataclass
class _Decoding:
    """One candidate while it is being decoded."""

    index: int
    sampling: Sampling
    detokenizer: Any
    stops: Sequence[str]
    on_token: TokenCallback | None
    started: float
    text: str = ""
    streamed: int = 0
    """How many characters of `text` on_token has been given."""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    elapsed_s: float = 0.0
    prompt_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add_token(self, token: int) -> None:
        """Detokenize one generated token; finish with "stop" if the text now holds a stop string."""
        self.tokens += 1
        self.detokenizer.add_token(token)
        self.text = self.detokenizer.text
        self._trim_at_stop_string()

    def count_end_of_sequence(self) -> None:
        self.tokens += 1

    def finish(self, reason: FinishReason) -> None:
        """End this candidate; text the detokenizer still held back may reveal a stop string."""
        if self.finished:
            return
        self.detokenizer.finalize()
        self.text = self.detokenizer.text
        if not self._trim_at_stop_string():
            self.finish_reason = reason
            self.elapsed_s = time.monotonic() - self.started
        self.stream()

    def stream(self) -> None:
        """Send on_token the text that can no longer change."""
        end = len(self.text) if self.finished else len(self.text) - stop_prefix_length(self.text, self.stops)
        if end > self.streamed:
            piece = self.text[self.streamed : end]
            self.streamed = end
            if self.on_token is not None:
                self.on_token(self.index, piece)

    def _trim_at_stop_string(self) -> bool:
        # A stop string cannot begin inside text already streamed: streaming held back any
        # end of the text that was a stop string's beginning.
        position = find_stop(self.text, self.stops, start=self.streamed)
        if position is None:
            return False
        self.text = self.text[:position]
        self.finish_reason = "stop"
        self.elapsed_s = time.monotonic() - self.started
        return True

    def to_candidate(self) -> Candidate:
        return Candidate(
            index=self.index,
            text=self.text,
            finish_reason=self.finish_reason or "error",
            sampling=self.sampling,
            completion_tokens=self.tokens,
            prompt_tokens=self.prompt_tokens,
            elapsed_s=self.elapsed_s,
            backend=BACKEND_NAME,
        )


# --- sampling --------------------------------------------------------------------------------


def _make_sampler(mlx: _Mlx, sampling: Sampling) -> Sampler:
    """A sampler for one candidate's row of the batch.

    Greedy candidates share mlx-lm's own greedy sampler: when every row uses the same sampler
    object, mlx-lm samples the whole batch in one call. A random candidate owns a PRNG key
    derived from its seed and splits it once per token, so its draws depend on its seed only,
    not on the global random state or on the other candidates.
    """
    if sampling.greedy:
        return mlx.sample_utils.greedy_sampler
    mx = mlx.core
    apply_top_k = mlx.sample_utils.apply_top_k
    apply_top_p = mlx.sample_utils.apply_top_p
    top_k, top_p = sampling.top_k, sampling.top_p
    inverse_temperature = 1.0 / sampling.temperature
    key = [mx.random.key(sampling.seed)]

    def sample(logprobs: Any) -> Any:
        key[0], step_key = mx.random.split(key[0])
        if 0 < top_k < logprobs.shape[-1]:  # top_k of the whole vocabulary or more keeps everything
            logprobs = apply_top_k(logprobs, top_k)
        if 0.0 < top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        return mx.random.categorical(logprobs * inverse_temperature, key=step_key)

    return sample


# --- the backend -----------------------------------------------------------------------------


@dataclass
class _Batch:
    """One request's candidates, keyed by the BatchGenerator's sequence ids."""

    decodings: list[_Decoding]
    by_uid: dict[int, _Decoding] = field(default_factory=dict)

    @property
    def live(self) -> list[_Decoding]:
        return [d for d in self.decodings if not d.finished]

    def candidates(self) -> list[Candidate]:
        return [d.to_candidate() for d in self.decodings]


class MLXBackend:
    """An MLX model directory served through mlx-lm.

    `model_path` must be a local directory (config.json, safetensors weights, tokenizer files);
    the project is offline, so a Hugging Face hub id is refused rather than downloaded.
    `max_parallel` is how many candidates decode in one batch; more wait for a free slot.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        context_length: int | None = None,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
    ) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
        self._model_path = Path(model_path).expanduser()
        _check_model_directory(self._model_path)
        self._mlx = _import_mlx()
        self._model, self._tokenizer = self._load()
        self._context_length = context_length or _context_length_from_config(self._model_path)
        self._max_parallel = max_parallel
        # One decode at a time: the model's forward passes are not meant to interleave.
        self._lock = threading.Lock()
        self._active: set[CancellationToken] = set()
        self._closed = False

    def _load(self) -> tuple[Any, Any]:
        try:
            model, tokenizer = self._mlx.lm.load(str(self._model_path))
        except (ValueError, KeyError, FileNotFoundError, OSError) as error:
            raise ModelError(
                f"mlx-lm {self._mlx.lm.__version__} could not load {self._model_path}: {error}. "
                "Check that the directory holds an MLX model (convert one with `mlx_lm.convert`) "
                f"or upgrade mlx-lm ({INSTALL_HINT} --upgrade)."
            ) from error
        return model, tokenizer

    @property
    def info(self) -> BackendInfo:
        mx = self._mlx.core
        return BackendInfo(
            backend=BACKEND_NAME,
            model=self._model_path.name,
            context_length=self._context_length,
            max_parallel=self._max_parallel,
            detail=f"mlx {mx.__version__}, mlx-lm {self._mlx.lm.__version__}, {mx.default_device()}",
        )

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        """Produce request.n candidates in index order (see base.Backend.generate).

        request.prompt_lookup is accepted and ignored: mlx-lm's batch decoder has no drafting.
        """
        if self._closed:
            raise BackendUnavailable("this MLX backend has been closed; create a new one")
        deadline = Deadline(request.timeout)
        started = time.monotonic()
        prompt = self._request_tokens(request)
        self._check_fits(len(prompt), request.max_tokens)
        return await run_cancellable(
            lambda token: self._decode(request, prompt, token, deadline, started), request.cancel
        )

    async def aclose(self) -> None:
        """Stop requests in flight (they finish as "cancelled") and release the model. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for token in list(self._active):
            token.cancel()
        # Waiting for the lock means waiting for a decode's current step: do it off the event loop.
        await asyncio.to_thread(self._release_model)

    def _release_model(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None
            self._mlx.core.clear_cache()

    # --- prompt ---

    def _request_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt as tokens: a raw prompt as it is, messages through the chat template."""
        if request.prompt is not None:
            tokens = list(self._tokenizer.encode(request.prompt))
            if not tokens:
                raise ModelError("the raw prompt is empty")
            return tokens
        return self._prompt_tokens(request.messages)

    def _prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        tokenizer = self._tokenizer
        if getattr(tokenizer, "has_chat_template", False):
            chat = [{"role": m.role, "content": m.content} for m in messages]
            return list(tokenizer.apply_chat_template(chat, add_generation_prompt=True))
        # A base model without a chat template still gets a readable transcript.
        transcript = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
        tokens = list(tokenizer.encode(transcript))
        if not tokens:
            raise ModelError(f"the tokenizer of {self._model_path} turned the prompt into no tokens")
        return tokens

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self._context_length:
            raise ContextOverflow(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"model's context of {self._context_length} tokens; shorten the prompt, lower "
                "max_tokens, or raise context_length if the model supports it."
            )

    # --- decoding (runs on a worker thread) ---

    def _decode(
        self,
        request: GenerationRequest,
        prompt: list[int],
        token: CancellationToken,
        deadline: Deadline,
        started: float,
    ) -> list[Candidate]:
        self._active.add(token)
        try:
            with self._lock:
                if self._model is None:
                    raise BackendUnavailable("this MLX backend was closed while the request waited")
                batch = self._new_batch(request, len(prompt), started)
                try:
                    cache = self._prefill(prompt[:-1], token, deadline)
                    self._decode_batch(request, batch, prompt[-1], cache, token, deadline)
                except _Interrupted as interruption:
                    for decoding in batch.live:
                        decoding.finish(interruption.reason)
                    if interruption.reason == "timeout":
                        raise GenerationTimeout(
                            f"generation passed its {request.timeout}s deadline; "
                            "the candidates so far are in .partial",
                            batch.candidates(),
                        ) from None
        finally:
            self._active.discard(token)
        return batch.candidates()

    def _new_batch(self, request: GenerationRequest, prompt_tokens: int, started: float) -> _Batch:
        stops = [stop for stop in request.stop if stop]
        decodings = [
            _Decoding(
                index=index,
                sampling=request.sampling_for(index),
                detokenizer=self._tokenizer.detokenizer,  # a fresh copy per access
                stops=stops,
                on_token=request.on_token,
                started=started,
                prompt_tokens=prompt_tokens,
            )
            for index in range(request.n)
        ]
        return _Batch(decodings)

    def _prefill(self, tokens: list[int], token: CancellationToken, deadline: Deadline) -> list[Any]:
        """Evaluate the prompt once into the KV cache every candidate starts from."""
        mx = self._mlx.core
        cache = self._mlx.cache.make_prompt_cache(self._model)
        with mx.stream(self._mlx.generate.generation_stream):
            for start in range(0, len(tokens), PREFILL_STEP_TOKENS):
                _raise_if_interrupted(token, deadline)
                chunk = mx.array(tokens[start : start + PREFILL_STEP_TOKENS])[None]
                self._model(chunk, cache=cache)
                mx.eval([layer.state for layer in cache])
        return cache

    def _decode_batch(
        self,
        request: GenerationRequest,
        batch: _Batch,
        last_prompt_token: int,
        cache: list[Any],
        token: CancellationToken,
        deadline: Deadline,
    ) -> None:
        """Decode every candidate to its end; _Interrupted if cancelled or past the deadline."""
        generator = self._mlx.generate.BatchGenerator(
            self._model,
            stop_tokens=[[eos] for eos in sorted(self._tokenizer.eos_token_ids)],
            completion_batch_size=self._max_parallel,
            prefill_batch_size=self._max_parallel,
        )
        try:
            # Each candidate's "prompt" is only the last prompt token on top of the shared cache,
            # so the batch goes straight to decoding (mlx-lm copies the cache into its batch).
            uids = generator.insert(
                [[last_prompt_token]] * request.n,
                max_tokens=[request.max_tokens] * request.n,
                caches=[cache] * request.n,
                samplers=[_make_sampler(self._mlx, d.sampling) for d in batch.decodings],
            )
            batch.by_uid = dict(zip(uids, batch.decodings, strict=True))
            while batch.live:
                _raise_if_interrupted(token, deadline)
                responses = generator.next_generated()
                if not responses:  # nothing left to decode although candidates are open: a bug
                    for decoding in batch.live:
                        decoding.finish("error")
                    break
                self._apply_responses(generator, batch, responses)
        finally:
            generator.close()

    def _apply_responses(self, generator: Any, batch: _Batch, responses: Sequence[Any]) -> None:
        for response in responses:
            decoding = batch.by_uid[response.uid]
            if decoding.finished:
                continue
            if response.finish_reason == "stop":
                # An end-of-sequence token ends the text and is not part of it.
                decoding.count_end_of_sequence()
                decoding.finish("stop")
                continue
            decoding.add_token(response.token)
            if decoding.finished:  # a stop string: mlx-lm only knows token-level stops
                generator.remove([response.uid])
                decoding.stream()
            elif response.finish_reason == "length":
                decoding.finish("length")
            else:
                decoding.stream()


class _Interrupted(Exception):
    """Decoding stopped early: the token was cancelled ("cancelled") or the deadline passed ("timeout")."""

    def __init__(self, reason: FinishReason) -> None:
        super().__init__(reason)
        self.reason: FinishReason = reason


def _raise_if_interrupted(token: CancellationToken, deadline: Deadline) -> None:
    if token.cancelled:
        raise _Interrupted("cancelled")
    if deadline.passed:
        raise _Interrupted("timeout")
