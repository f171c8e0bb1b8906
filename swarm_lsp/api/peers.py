"""Federation over HTTP: the peer protocol (hello, generate) and the dashboard's peer list.

POST /federation/v1/hello and /federation/v1/generate are for other swarm-lsp processes: the first
tells who this is and proves the shared secret, the second must be signed with it (security.py
lets them through without the bearer token for that reason). GET, POST and DELETE /api/peers
show and edit the manual peer list (docs/federation.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from swarm_lsp import peering
from swarm_lsp.api.errors import ApiError
from swarm_lsp.api.schema import read_json
from swarm_lsp.api.state import ApiState
from swarm_lsp.basics import SwarmLspError


def _state(request: Request) -> ApiState:
    return request.app.state.api


_REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (peering.FederationOff, 403, "federation_off"),
    (peering.SignatureRejected, 401, "signature_rejected"),
    (peering.BadPeerRequest, 400, "invalid_request"),
)


@contextlib.contextmanager
def _peer_errors() -> Iterator[None]:
    """A peer protocol refusal as an API error with its status."""
    try:
        yield
    except tuple(kind for kind, _status, _code in _REFUSALS) as error:
        status, code = next((status, code) for kind, status, code in _REFUSALS if isinstance(error, kind))
        raise ApiError(status, str(error), code=code) from None


async def hello(request: Request) -> Response:
    body = await read_json(request)
    host = request.headers.get("host", "")
    with _peer_errors():
        # Off the event loop: while the model loads, the workspace's lock is held for seconds.
        answer = await asyncio.to_thread(peering.hello, _state(request).workspace, body, host)
    return JSONResponse(answer)


async def generate(request: Request) -> Response:
    body = await request.body()
    signature = request.headers.get(peering.SIGNATURE_HEADER)
    with _peer_errors():
        answer = await peering.generate(_state(request).workspace, body, signature, request.is_disconnected)
    return JSONResponse(answer)


async def list_peers(request: Request) -> Response:
    return JSONResponse(peering.peers_view(_state(request).workspace))


async def add_peer(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise ApiError(400, 'send {"url": "http://host:port", "token": "...", "kind": "auto"}', param="url")
    fields: dict[str, Any] = {key: str(body.get(key) or "") for key in ("token", "model")}
    try:
        peering.add_peer(
            _state(request).workspace, body["url"], kind=str(body.get("kind") or "auto"), **fields
        )
    except SwarmLspError as error:
        raise ApiError(400, str(error), param="url") from None
    return JSONResponse(peering.peers_view(_state(request).workspace))


async def remove_peer(request: Request) -> Response:
    url = request.query_params.get("url", "")
    if not url:
        raise ApiError(400, "say which peer: DELETE /api/peers?url=http://host:port", param="url")
    try:
        peering.remove_peer(_state(request).workspace, url)
    except SwarmLspError as error:
        raise ApiError(404, str(error), param="url") from None
    return JSONResponse(peering.peers_view(_state(request).workspace))
