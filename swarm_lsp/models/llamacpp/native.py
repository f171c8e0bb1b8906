"""Thin wrappers over llama.cpp's C API: its log, loading, contexts, batches, samplers, token text.

Each turns a C failure (a NULL pointer, a status code) into the swarm-lsp error that says what to
do, with the lines llama.cpp logged about it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import deque
from pathlib import Path

import llama_cpp
import psutil
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from swarm_lsp.models.base import ContextOverflow, DoesNotFit, ModelError, ModelNotFound, Sampling
from swarm_lsp.models.llamacpp.decoding import SamplerHandle

TILED_UBATCH_MIN_TOKENS = 64
"""From this many tokens in one ubatch, ggml's CPU flash attention switches to a tiled kernel with
different rounding. Steps stay below it and prompt chunks above it, so a token's numbers never
depend on how requests were batched, split or cached."""

_GGML_LOG_WARN = 3
_GGML_LOG_ERROR = 4
_GGML_LOG_CONT = 5
_LLAMA_DEFAULT_SEED = 0xFFFFFFFF
"""llama.cpp reads this seed as "pick a random one", so a user seed must never map onto it."""

_OUT_OF_MEMORY_HINTS = ("alloc", "out of memory", "memory", "mmap")

logger = logging.getLogger(__name__)


class NativeLog:
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


native_log = NativeLog()


def default_thread_count() -> int:
    """Physical cores: llama.cpp's matrix kernels gain nothing from SMT siblings."""
    physical = psutil.cpu_count(logical=False)
    return max(1, physical or os.cpu_count() or 1)


def _human_bytes(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def _recent_errors() -> str:
    return " ".join(native_log.recent_errors).strip()


# --- loading ---------------------------------------------------------------------------------


def load_model(path: Path) -> int:
    """A `struct llama_model *` for the GGUF file at `path`."""
    if not path.is_file():
        raise ModelNotFound(
            f"Model file not found: {path}. Run `swarm-lsp doctor` to see the models this "
            "machine has, or `swarm-lsp models pull` to download one."
        )
    native_log.recent_errors.clear()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    if not model:
        raise _load_failure(path, _recent_errors())
    return model


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


def create_context(
    model: int,
    *,
    kv_cells: int,
    n_batch: int,
    n_seq_max: int,
    n_threads: int,
    n_threads_batch: int,
    model_name: str,
) -> int:
    """A `struct llama_context *` with one unified KV cache of `kv_cells` cells for all sequences."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = kv_cells
    params.n_batch = n_batch
    # One chunk is one ubatch, so no chunk is split into a small tail (see _prefill_chunks).
    params.n_ubatch = params.n_batch
    params.n_seq_max = n_seq_max
    params.kv_unified = True
    params.n_threads = n_threads
    params.n_threads_batch = n_threads_batch
    native_log.recent_errors.clear()
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        errors = _recent_errors() or "no details"
        available = _human_bytes(psutil.virtual_memory().available)
        raise DoesNotFit(
            f"llama.cpp could not create a context of {params.n_ctx} KV cells for {model_name} "
            f"({available} available). Lower n_ctx, n_seq_max or generation_reserve. "
            f"(llama.cpp: {errors})"
        )
    return ctx


def chat_formatter(model: int, vocab: int) -> Jinja2ChatFormatter | None:
    """The model's own chat template, or None where the GGUF carries none."""
    template = llama_cpp.llama_model_chat_template(model, None)
    if not template:
        return None
    return Jinja2ChatFormatter(
        template=template.decode("utf-8", errors="replace"),
        eos_token=_token_text(vocab, llama_cpp.llama_vocab_eos(vocab)),
        bos_token=_token_text(vocab, llama_cpp.llama_vocab_bos(vocab)),
    )


def _token_text(vocab: int, token: int) -> str:
    if token < 0:
        return ""
    return (llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", errors="replace")


# --- decoding --------------------------------------------------------------------------------


class Batch:
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


def decode(ctx: int, batch: Batch, kv_cells: int) -> None:
    """Run one llama_decode over `batch`; ContextOverflow where the KV cache has no room for it."""
    batch.raw.n_tokens = batch.size
    status = llama_cpp.llama_decode(ctx, batch.raw)
    if status == 0:
        return
    if status == 1:
        raise ContextOverflow(
            f"the KV cache of {kv_cells} cells has no room for this batch; lower n or "
            "max_tokens, or raise n_ctx / generation_reserve"
        )
    errors = _recent_errors() or "no details"
    raise ModelError(f"llama_decode failed with status {status} (llama.cpp: {errors})")


def token_piece(vocab: int, token: int, *, special: bool = False) -> bytes:
    """The bytes of one token (a piece of a UTF-8 character, possibly); `special` renders control
    tokens as their text (`<fim_prefix>`) instead of nothing."""
    buffer = ctypes.create_string_buffer(64)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
    return buffer.raw[: max(0, size)]


def fim_markers(vocab: int) -> tuple[str, str, str] | None:
    """The vocabulary's fill-in-the-middle tokens (prefix, suffix, middle) as text, when the GGUF
    declares all three."""
    ids = [
        llama_cpp.llama_vocab_fim_pre(vocab),
        llama_cpp.llama_vocab_fim_suf(vocab),
        llama_cpp.llama_vocab_fim_mid(vocab),
    ]
    if any(token < 0 for token in ids):
        return None
    pre, suf, mid = (token_piece(vocab, token, special=True).decode("utf-8", "replace") for token in ids)
    return (pre, suf, mid) if pre and suf and mid else None


# --- sampling --------------------------------------------------------------------------------


def new_sampler(sampling: Sampling, eog_ban: SamplerHandle | None = None) -> SamplerHandle:
    """A sampler chain for one candidate; `eog_ban` (see `eog_ban_sampler`) goes first."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: SamplerHandle) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)  # the chain now owns and frees it

    if eog_ban is not None:
        add(eog_ban)
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


def eog_tokens(vocab: int, n_vocab: int) -> list[int]:
    """The vocabulary's end-of-generation tokens."""
    return [token for token in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, token)]


def eog_ban_sampler(n_vocab: int, banned: list[int]) -> SamplerHandle:
    """A logit-bias sampler that makes the `banned` tokens impossible."""
    biases = (llama_cpp.llama_logit_bias * len(banned))(
        *(llama_cpp.llama_logit_bias(token, float("-inf")) for token in banned)
    )
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(banned), biases)
