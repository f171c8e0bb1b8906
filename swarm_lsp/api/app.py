"""The Starlette application of `swarm-lsp api`: routes, error handling and the guard."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from swarm_lsp.api import chat, dashboard, events, listings, peers
from swarm_lsp.api.errors import ApiError
from swarm_lsp.api.security import Guard, allowed_hosts
from swarm_lsp.api.state import ApiState


def build_app(
    state: ApiState, *, host: str, port: int, token: str | None, allow_hosts: Iterable[str] = ()
) -> Any:
    """The API and dashboard for `state`, behind the Host, Origin and token checks."""
    routes = [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/models", listings.list_models, methods=["GET"]),
        Route("/v1/embeddings", listings.embeddings, methods=["POST"]),
        Route("/api/status", dashboard.status, methods=["GET"]),
        Route("/api/requests", dashboard.requests, methods=["GET"]),
        Route("/api/events", events.events, methods=["GET"]),
        Route("/api/tools", dashboard.tools, methods=["GET"]),
        Route("/api/settings", dashboard.settings, methods=["GET"]),
        Route("/api/settings", dashboard.change_setting, methods=["POST"]),
        Route("/api/doctor", dashboard.doctor, methods=["GET"]),
        Route("/api/peers", peers.list_peers, methods=["GET"]),
        Route("/api/peers", peers.add_peer, methods=["POST"]),
        Route("/api/peers", peers.remove_peer, methods=["DELETE"]),
        Route("/federation/v1/hello", peers.hello, methods=["POST"]),
        Route("/federation/v1/generate", peers.generate, methods=["POST"]),
        Route("/", dashboard.page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=dashboard.STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            404: _not_found,
            405: _wrong_method,
            Exception: _server_error,
        },
    )
    app.state.api = state
    return Guard(app, hosts=allowed_hosts(host, allow_hosts), port=port, token=token)


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error.response()


async def _not_found(request: Request, error: Exception) -> Response:
    return ApiError(404, f"no endpoint at {request.url.path}; see docs/api.md", code="not_found").response()


async def _wrong_method(request: Request, error: Exception) -> Response:
    return ApiError(
        405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"
    ).response()


async def _server_error(request: Request, error: Exception) -> Response:
    return chat.error_for(error).response()
