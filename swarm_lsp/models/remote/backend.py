"""Any OpenAI-compatible chat server as a Backend: llama-server, vLLM, Ollama, LM Studio, a peer swarm-lsp.

One `generate()` streams `POST /chat/completions` and routes each choice's text to the candidate
it belongs to. n candidates that differ only by seed are asked for in one request with `n`;
servers that ignore `n` (llama_cpp.server answers with one choice) or reject it (llama-server
allows one choice only) are remembered per instance, and the missing candidates come from
parallel requests, each with its own seed. Candidates whose sampling differs always go in
parallel requests.

Retries cover only failures before the server starts answering (connection refused, 429, 5xx):
once text has reached `on_token`, repeating the request would send that text twice.

Servers often accept any model name and quietly answer with whatever they have loaded
(llama_cpp.server and llama-server do), so the configured name is checked once against
`GET /models` before the first generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import (
    BackendInfo,
    BackendUnavailable,
    Candidate,
    ContextOverflow,
    Deadline,
    GenerationRequest,
    GenerationTimeout,
    ModelError,
    ModelNotFound,
    Sampling,
    TokenCallback,
)
from swarm_lsp.models.remote.http import (
    MODEL_MISSING,
    RemoteError,
    describe_transport_error,
    error_message_of,
    normalise_base_url,
    offers,
)
from swarm_lsp.models.remote.streaming import (
    BACKEND_NAME,
    Draft,
    apply_chunk,
    candidates_or_error,
    parse_chunk,
    sse_data,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_PARALLEL = 4

# How often generate() looks at the cancellation token and the deadline while text streams in.
_POLL_INTERVAL_S = 0.05
# A server asking us to wait longer than this is treated like any other busy server.
_MAX_RETRY_AFTER_S = 30.0

# Failures that happen before the server has seen the request, so sending it again is safe.
_RETRYABLE_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)

_CONTEXT_OVERFLOW = re.compile(r"context (length|window|size)|maximum context|exceeds? the context", re.I)
# llama-server says "Only one completion choice is allowed"; others name the parameter n.
_N_REJECTED = re.compile(r"\bchoices?\b|\bn\b", re.I)


class RemoteBackend:
    """A Backend that sends chat requests to an OpenAI-compatible HTTP server."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        context_length: int | None = None,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
    ) -> None:
        """
        base_url: e.g. http://127.0.0.1:8080/v1; without a path, /v1 is added.
        model: the name the server knows the model by; None takes the first one it lists.
        timeout: seconds to wait for any response bytes (a long prompt's prefill counts).
        retries: extra attempts after connection failures, 429 and 5xx, with exponential
            backoff from retry_backoff_s and jitter so parallel requests do not retry in step.
        context_length: the server's window, if known; otherwise taken from GET /models
            where the server reports it, else 0 (unknown).
        max_parallel: requests this backend keeps open at once.
        """
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
        self.base_url = normalise_base_url(base_url)
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.max_parallel = max_parallel
        self._model = model
        self._model_checked = False
        self._api_key = api_key
        self._context_length = context_length
        self._server_honours_n: bool | None = None  # None until a request with n > 1 tells us
        self._slots = asyncio.Semaphore(max_parallel)
        self._closed = False
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_parallel + 1),
        )

    # -- the Backend interface ------------------------------------------------------------------

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            backend=BACKEND_NAME,
            model=self._model or "",
            context_length=self._context_length or 0,
            max_parallel=self.max_parallel,
            detail=self.base_url,
        )

    @property
    def server_honours_n(self) -> bool | None:
        """Whether this server returned n choices for one request; None until it was asked."""
        return self._server_honours_n

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        started_at = time.monotonic()
        drafts = [Draft(i, request.sampling_for(i), started_at) for i in range(request.n)]
        work = asyncio.ensure_future(self._produce(request, drafts))
        outcome = await _wait_for(work, request.cancel, Deadline(request.timeout))
        if outcome == "cancelled":
            for draft in drafts:
                draft.finish("cancelled")
            return [draft.to_candidate() for draft in drafts]
        if outcome == "timeout":
            for draft in drafts:
                draft.finish("timeout")
            partial = [draft.to_candidate() for draft in drafts]
            raise GenerationTimeout(
                f"{self.base_url} did not finish {request.n} candidate(s) within {request.timeout} s",
                partial=partial,
            )
        work.result()  # raises what went wrong for every candidate alike
        return candidates_or_error(drafts)

    async def list_models(self) -> list[str]:
        """The model names the server offers (GET /models)."""
        return [str(entry["id"]) for entry in await self._fetch_model_entries()]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    async def __aenter__(self) -> RemoteBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- planning the requests ------------------------------------------------------------------

    async def _produce(self, request: GenerationRequest, drafts: list[Draft]) -> None:
        model = await self._resolve_model()
        common = _common_payload(request, model)
        waiting = drafts
        if self._may_ask_for_all_at_once(drafts):
            waiting = await self._ask_for_all_at_once(common, drafts, request.on_token)
        if waiting:
            await self._ask_in_parallel(common, waiting, request.on_token)

    def _may_ask_for_all_at_once(self, drafts: Sequence[Draft]) -> bool:
        first = drafts[0].sampling
        same_sampling = all(
            d.sampling.temperature == first.temperature and d.sampling.top_p == first.top_p for d in drafts
        )
        return len(drafts) > 1 and same_sampling and self._server_honours_n is not False

    async def _ask_for_all_at_once(
        self, common: dict[str, Any], drafts: list[Draft], on_token: TokenCallback | None
    ) -> list[Draft]:
        """One request with n; returns the drafts the server did not produce."""
        payload = {**common, **_sampling_fields(drafts[0].sampling), "n": len(drafts)}
        try:
            await self._stream_into(payload, drafts, on_token)
        except RemoteError as error:
            if error.status != 400 or not _N_REJECTED.search(str(error)):
                raise
            log.info("%s rejects n > 1; asking for each candidate separately", self.base_url)
            self._server_honours_n = False
            return drafts
        missing = [d for d in drafts if not d.seen]
        if self._server_honours_n is None:
            self._server_honours_n = not missing
            if missing:
                log.info("%s ignores n; asking for the other candidates in parallel", self.base_url)
        return missing

    async def _ask_in_parallel(
        self, common: dict[str, Any], drafts: list[Draft], on_token: TokenCallback | None
    ) -> None:
        """One request per draft (bounded by max_parallel); a failure stays with its draft."""
        outcomes = await asyncio.gather(
            *(self._stream_into({**common, **_sampling_fields(d.sampling)}, [d], on_token) for d in drafts),
            return_exceptions=True,
        )
        for draft, outcome in zip(drafts, outcomes, strict=True):
            if isinstance(outcome, ModelError):
                draft.fail(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome

    # -- one streaming request ------------------------------------------------------------------

    async def _stream_into(
        self, payload: dict[str, Any], targets: Sequence[Draft], on_token: TokenCallback | None
    ) -> None:
        """Stream one chat completion; choice i of the answer feeds targets[i]."""
        async with self._slots:
            endpoint = "completions" if "prompt" in payload else "chat/completions"
            response = await self._send("POST", endpoint, payload=payload, stream=True)
            broken: ModelError | None = None
            complete = False
            try:
                complete = await self._read_answer(response, targets, on_token)
            except httpx.HTTPError as exc:
                broken = self._transport_error(exc, "while streaming")
            finally:
                await response.aclose()
        self._settle(targets, complete, broken)

    async def _read_answer(
        self, response: httpx.Response, targets: Sequence[Draft], on_token: TokenCallback | None
    ) -> bool:
        """Apply the answer's chunks to the targets; True when the server said it was done."""
        if response.headers.get("content-type", "").startswith("application/json"):
            # The server ignored stream=true and sent the whole completion at once.
            apply_chunk(json.loads(await response.aread()), targets, on_token, self.base_url)
            for draft in targets:
                if draft.seen:
                    draft.finish("stop")
            return True
        async for data in sse_data(response):
            if data == "[DONE]":
                return True
            apply_chunk(parse_chunk(data, self.base_url), targets, on_token, self.base_url)
        return all(d.finished for d in targets if d.seen) and any(d.seen for d in targets)

    def _settle(self, targets: Sequence[Draft], complete: bool, broken: ModelError | None) -> None:
        """After a stream ends: an answer without output is an error; unfinished choices failed."""
        if not any(d.seen for d in targets):
            raise broken or RemoteError(
                f"{self.base_url} ended the stream without any output; the server's log says why "
                "(a prompt longer than the context window is a common cause)"
            )
        for draft in targets:
            if draft.seen and not draft.finished:
                draft.fail(broken or self._cut_short(draft, complete))

    def _cut_short(self, draft: Draft, complete: bool) -> RemoteError:
        if complete:
            return RemoteError(
                f"{self.base_url} ended candidate {draft.index} without a finish reason; "
                "llama_cpp.server does this to a stream when another request arrives unless it "
                "runs with --interrupt_requests False (or use max_parallel=1)"
            )
        return RemoteError(f"{self.base_url} closed the stream of candidate {draft.index} before it finished")

    # -- HTTP with retries and readable errors --------------------------------------------------

    async def _send(
        self, method: str, path: str, *, payload: dict[str, Any] | None = None, stream: bool = False
    ) -> httpx.Response:
        """Send a request, retrying failures that happen before the server answers."""
        if self._closed:
            raise BackendUnavailable(f"the remote backend for {self.base_url} is closed")
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            failure: httpx.Response | httpx.TransportError
            try:
                request = self._client.build_request(method, path, json=payload)
                response = await self._client.send(request, stream=stream)
            except _RETRYABLE_TRANSPORT_ERRORS as exc:
                failure = exc
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, "before answering") from exc
            else:
                if response.is_success:
                    return response
                await response.aread()
                await response.aclose()
                if not _worth_retrying(response.status_code):
                    raise await self._error_for(response)
                failure = response
            if attempt == attempts:
                raise self._gave_up(failure, attempts)
            delay = self._retry_delay(attempt, failure)
            log.warning(
                "%s: %s; retrying in %.2f s (attempt %d of %d)",
                self.base_url,
                _describe(failure),
                delay,
                attempt + 1,
                attempts,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _retry_delay(self, attempt: int, failure: httpx.Response | httpx.TransportError) -> float:
        delay = self.retry_backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        if isinstance(failure, httpx.Response):
            try:
                retry_after = float(failure.headers.get("retry-after", ""))
            except ValueError:
                retry_after = 0.0
            delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
        return delay

    def _gave_up(self, failure: httpx.Response | httpx.TransportError, attempts: int) -> ModelError:
        tries = f"tried {attempts} time{'s' if attempts > 1 else ''}"
        if isinstance(failure, httpx.ConnectError):
            return BackendUnavailable(
                f"could not connect to {self.base_url}: is the server running? "
                f"Start it, or point the remote backend's url at one that is ({tries}: {failure})"
            )
        if isinstance(failure, httpx.ConnectTimeout):
            return BackendUnavailable(
                f"could not connect to {self.base_url}: it did not accept a connection in time; "
                f"check the address and that the server is up ({tries})"
            )
        if isinstance(failure, httpx.TransportError):
            return BackendUnavailable(f"{self.base_url} closed the connection without answering ({tries})")
        message, _ = error_message_of(failure)
        if failure.status_code == 429:
            return BackendUnavailable(
                f"{self.base_url} is rate limiting requests (429: {message}; {tries}); "
                "lower max_parallel or try again later"
            )
        return BackendUnavailable(
            f"{self.base_url} answered {failure.status_code} {failure.reason_phrase}: {message} "
            f"({tries}); the server's log says more"
        )

    def _transport_error(self, exc: httpx.HTTPError, when: str) -> ModelError:
        if isinstance(exc, httpx.TimeoutException):
            return BackendUnavailable(
                f"{self.base_url} went silent {when} and timed out ({type(exc).__name__}); "
                "a slow model or a long prompt may need a larger remote timeout setting"
            )
        return RemoteError(f"the connection to {self.base_url} failed {when}: {exc!r}")

    async def _error_for(self, response: httpx.Response) -> ModelError:
        """Turn an error answer into the error that tells the user what to do."""
        status = response.status_code
        message, code = error_message_of(response)
        request = response.request
        what = f"{request.method} {request.url} answered {status} {response.reason_phrase}: {message}"
        if status in (401, 403):
            hint = (
                "the remote backend's api_key is not accepted by this server; check it"
                if self._api_key
                else "the server wants an API key: set the remote backend's api_key"
            )
            return BackendUnavailable(f"{what}. {hint}")
        if code == "context_length_exceeded" or _CONTEXT_OVERFLOW.search(message):
            return ContextOverflow(f"{what}. Shorten the prompt or lower max_tokens")
        if response.request.url.path.endswith("/models"):
            return self._maybe_wrong_base_url(what, status)
        if status == 404 or code == "model_not_found" or MODEL_MISSING.search(message):
            return await self._model_not_found(what, status)
        return RemoteError(what, status)

    async def _model_not_found(self, what: str, status: int) -> ModelError:
        try:
            offered = await self.list_models()
        except ModelError:
            return self._maybe_wrong_base_url(what, status)
        if self._model in offered and not MODEL_MISSING.search(what):
            return RemoteError(what, status)  # the model exists, so the 404 is about something else
        return ModelNotFound(self._not_offered(self._model or "", offered))

    def _maybe_wrong_base_url(self, what: str, status: int) -> RemoteError:
        return RemoteError(
            f"{what}. Is {self.base_url} the server's OpenAI-compatible base URL? It usually ends in /v1",
            status,
        )

    def _not_offered(self, model: str, offered: Sequence[str]) -> str:
        names = ", ".join(offered) if offered else "none"
        return (
            f"{self.base_url} has no model named {model!r}; it offers: {names}. "
            "Set the remote backend's model to one of these, or leave it unset to use the first"
        )

    # -- the model name -------------------------------------------------------------------------

    async def _fetch_model_entries(self) -> list[dict[str, Any]]:
        response = await self._send("GET", "models")
        try:
            body = response.json()
        except ValueError as exc:
            raise RemoteError(
                f"{self.base_url}/models did not answer with JSON: {response.text[:200]!r}"
            ) from exc
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise RemoteError(f"{self.base_url}/models answered without a model list: {_excerpt(response)}")
        return [entry for entry in entries if isinstance(entry, dict) and "id" in entry]

    async def _resolve_model(self) -> str:
        """The model name to send, checked once against what the server lists."""
        if self._model_checked and self._model:
            return self._model
        try:
            entries = await self._fetch_model_entries()
        except RemoteError as error:
            if error.status == 404 and self._model:
                self._model_checked = True  # the server has no model list; trust the setting
                return self._model
            raise
        names = [str(entry["id"]) for entry in entries]
        if self._model is None:
            if not names:
                raise BackendUnavailable(
                    f"{self.base_url} lists no models; set the remote backend's model to the name it expects"
                )
            self._model = names[0]
        elif not offers(names, self._model):
            raise ModelNotFound(self._not_offered(self._model, names))
        self._learn_context_length(entries)
        self._model_checked = True
        return self._model

    def _learn_context_length(self, entries: Sequence[dict[str, Any]]) -> None:
        if self._context_length is not None:
            return
        for entry in entries:
            if entry["id"] == self._model:
                # vLLM reports max_model_len; OpenRouter and others context_length.
                for key in ("max_model_len", "context_length"):
                    if isinstance(entry.get(key), int):
                        self._context_length = entry[key]
                        return


# -- helpers that need no backend state ----------------------------------------------------------


async def _wait_for(
    work: asyncio.Future[None], token: CancellationToken | None, deadline: Deadline
) -> Literal["done", "cancelled", "timeout"]:
    """Wait for `work`, stopping it when the token is cancelled or the deadline passes.

    Cancelling the calling task cancels `work` too (which closes its streams) and re-raises.
    """
    try:
        while not work.done():
            if token is not None and token.cancelled:
                await _stop(work)
                return "cancelled"
            if deadline.passed:
                await _stop(work)
                return "timeout"
            remaining = deadline.remaining()
            poll = _POLL_INTERVAL_S if remaining is None else min(_POLL_INTERVAL_S, remaining)
            await asyncio.wait({work}, timeout=poll)
    except asyncio.CancelledError:
        await _stop(work)
        raise
    return "done"


async def _stop(work: asyncio.Future[None]) -> None:
    work.cancel()
    await asyncio.wait({work})
    if not work.cancelled():
        work.exception()  # retrieved so asyncio does not log it; the caller stopped caring


def _common_payload(request: GenerationRequest, model: str) -> dict[str, Any]:
    """A raw prompt goes to /completions as `prompt`; messages to /chat/completions."""
    payload: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens, "stream": True}
    if request.prompt is not None:
        payload["prompt"] = request.prompt
    else:
        payload["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.stop:
        payload["stop"] = list(request.stop)
    return payload


def _sampling_fields(sampling: Sampling) -> dict[str, Any]:
    # top_k is not part of the OpenAI API and strict servers reject unknown fields.
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}


def _worth_retrying(status: int) -> bool:
    return status == 429 or status >= 500


def _describe(failure: httpx.Response | httpx.TransportError) -> str:
    if isinstance(failure, httpx.Response):
        return f"answered {failure.status_code} {failure.reason_phrase}"
    return describe_transport_error(failure)


def _excerpt(response: httpx.Response) -> str:
    return repr(response.text[:200])
