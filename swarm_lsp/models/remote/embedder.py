"""Embeddings from any OpenAI-compatible server: ``POST {base_url}/embeddings``."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from swarm_lsp.models.base import BackendUnavailable, ModelNotFound
from swarm_lsp.models.embedding import (
    DEFAULT_MAX_TOKENS,
    EmbeddingError,
    PrefixedEmbedder,
    StatsRecorder,
    clean_text,
    l2_normalise,
    make_id,
    prefix_tag,
)
from swarm_lsp.models.remote.http import (
    MODEL_MISSING,
    describe_transport_error,
    normalise_base_url,
    offers,
)

logger = logging.getLogger(__name__)

REMOTE_CHARS_PER_TOKEN = 3
"""A remote server's tokenizer is out of reach, so its window is approximated in characters.
Code runs about 3-4 characters per token; 3 errs towards cutting early rather than overflowing."""

_TOO_LONG = re.compile(
    r"too (long|large)|maximum context|context (length|window|size)|exceeds?|increase the physical batch",
    re.I,
)
_NO_EMBEDDINGS = re.compile(r"embedding", re.I)


class RemoteEmbedder(PrefixedEmbedder):
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
            if model is not None and offered is not None and not offers(offered, model):
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
        if response.status_code in (400, 404) and MODEL_MISSING.search(message) and self.model:
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
    return describe_transport_error(error)
