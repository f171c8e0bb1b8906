"""Another swarm-lsp process as a Backend: its model writes candidates for a vote held here.

One signed `POST /federation/v1/generate` per assignment; the peer answers when its voters are
done. Cancelling closes the connection, and the peer stops its voters when it sees that.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

import httpx

from swarm_lsp.federation.protocol import GENERATE_PATH, SIGNATURE_HEADER, PeerProtocolError, sign
from swarm_lsp.models.base import (
    BackendInfo,
    Candidate,
    Deadline,
    GenerationRequest,
    GenerationTimeout,
    ModelError,
)
from swarm_lsp.models.remote.http import describe_transport_error, error_message_of

BACKEND_NAME = "peer"
_POLL_INTERVAL_S = 0.05
_FINISH_REASONS = frozenset({"stop", "length", "cancelled", "timeout", "error"})


class PeerFailed(ModelError):
    """A peer could not produce its voters: unreachable, gone mid-request, or it refused."""


class PeerBackend:
    def __init__(
        self, url: str, *, secret: str, model: str = "", slots: int = 1, timeout: float = 120.0
    ) -> None:
        self.url = url
        self.label = url.split("://", 1)[-1]
        self.model = model
        self.slots = slots
        self._secret = secret
        self._client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout, connect=5.0))

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(BACKEND_NAME, self.model, 0, max(1, self.slots), detail=self.url)

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        body = json.dumps(_payload(request)).encode()
        headers = {
            SIGNATURE_HEADER: sign(self._secret, "POST", GENERATE_PATH, body),
            "content-type": "application/json",
        }
        started = time.monotonic()
        work = asyncio.ensure_future(self._client.post(GENERATE_PATH, content=body, headers=headers))
        deadline = Deadline(request.timeout)
        while not work.done():
            if request.cancel is not None and request.cancel.cancelled:
                work.cancel()
                return [_ended(request, i, "cancelled") for i in range(request.n)]
            if deadline.passed:
                work.cancel()
                raise GenerationTimeout(
                    f"peer {self.label} did not answer within {request.timeout:.0f} s",
                    partial=[_ended(request, i, "timeout") for i in range(request.n)],
                )
            await asyncio.wait({work}, timeout=_POLL_INTERVAL_S)
        try:
            response = work.result()
        except httpx.TransportError as error:
            detail = describe_transport_error(error)
            raise PeerFailed(f"peer {self.label} failed mid-request: {detail}") from None
        if response.status_code != 200:
            message = error_message_of(response)[0]
            raise PeerFailed(f"peer {self.label} refused: HTTP {response.status_code} {message}")
        return _candidates(request, response, self.label, self.model, time.monotonic() - started)

    async def aclose(self) -> None:
        await self._client.aclose()


def _payload(request: GenerationRequest) -> dict[str, Any]:
    return {
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "prompt": request.prompt,
        "n": request.n,
        "samplings": [asdict(request.sampling_for(i)) for i in range(request.n)],
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "timeout": request.timeout,
    }


def _candidates(
    request: GenerationRequest, response: httpx.Response, label: str, model: str, elapsed: float
) -> list[Candidate]:
    try:
        items = response.json()["candidates"]
        if not isinstance(items, list) or len(items) != request.n:
            raise ValueError(f"{len(items) if isinstance(items, list) else 'no'} candidates for {request.n}")
        candidates = []
        for index, item in enumerate(items):
            reason = item["finish_reason"]
            if reason not in _FINISH_REASONS or not isinstance(item["text"], str):
                raise ValueError(f"candidate {index} is malformed")
            candidates.append(
                Candidate(
                    index=index,
                    text=item["text"],
                    finish_reason=reason,
                    sampling=request.sampling_for(index),
                    completion_tokens=int(item.get("completion_tokens") or 0),
                    prompt_tokens=int(item.get("prompt_tokens") or 0),
                    elapsed_s=elapsed,
                    backend=f"peer {label}" + (f" ({model})" if model else ""),
                )
            )
        return candidates
    except (ValueError, KeyError, TypeError) as error:
        raise PeerProtocolError(f"peer {label} answered something that is not candidates: {error}") from None


def _ended(request: GenerationRequest, index: int, reason: Any) -> Candidate:
    return Candidate(index, "", reason, request.sampling_for(index))
