"""Serving `swarm-lsp api`: one process, one workspace, the API and the dashboard on one port.

On start it listens at once, then, in the background, loads the model (so the first request does
not wait for it; a model that cannot load is reported by /api/status and by every chat request)
and brings the index up to date (then watches the files and embeds the backlog).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from swarm_lsp import peering
from swarm_lsp.api.app import build_app
from swarm_lsp.api.state import ApiState
from swarm_lsp.basics import SwarmLspError
from swarm_lsp.sockets import WILDCARD_ADDRESSES, is_loopback, serve_asgi, url_host
from swarm_lsp.tools.toolbox import audit_path
from swarm_lsp.upkeep import IndexUpkeep
from swarm_lsp.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_API_PORT = 17615


class TokenRequired(SwarmLspError):
    """A bind address other than loopback was asked for without a token."""


def check_exposure(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise TokenRequired(
            f"binding {host} exposes the API and the dashboard beyond this machine; pass --token (or "
            "--token-file) so every request must carry Authorization: Bearer <token>"
        )


async def serve(
    workspace: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_API_PORT,
    token: str | None = None,
    allow_hosts: Iterable[str] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; `on_ready` gets the URL once the socket listens (port 0 picks one)."""
    check_exposure(host, token)
    upkeep = IndexUpkeep(workspace, watch=workspace.settings.index.watch)
    state = ApiState(workspace, upkeep, audit_path(workspace))
    shown = "127.0.0.1" if host.strip("[]") in WILDCARD_ADDRESSES else url_host(host)
    bound: list[int] = []

    def make_app(actual: int) -> object:
        bound.append(actual)
        return build_app(state, host=host, port=actual, token=token, allow_hosts=allow_hosts)

    try:
        await serve_asgi(
            make_app,
            host,
            port,
            background=[lambda: _load_model(state, host, bound), lambda: _index(upkeep)],
            on_ready=None if on_ready is None else lambda actual: on_ready(f"http://{shown}:{actual}"),
        )
    finally:
        await asyncio.to_thread(upkeep.close)
        await peering.stop(workspace)


async def _load_model(state: ApiState, host: str, bound: list[int]) -> None:
    """Load the model; then, with federation on, start the peers' health checks and announce."""
    try:
        await asyncio.to_thread(lambda: state.workspace.runner)
    except SwarmLspError as error:
        state.model_error = str(error)
        log.error("the model could not be loaded: %s", error)
    try:
        await peering.start(state.workspace, api_host=host, api_port=bound[0])
    except Exception as error:  # federation is extra: the API serves this machine's model regardless
        log.error("federation could not start: %s", error)


async def _index(upkeep: IndexUpkeep) -> None:
    try:
        await upkeep.ensure()
    except Exception:  # reported by /api/status; the API keeps answering (grounding uses what is indexed)
        log.exception("the first index sync failed")
