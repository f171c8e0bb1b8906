"""Listening sockets for the HTTP doors (the MCP tools' and the API's): loopback checks, binding,
and serving an ASGI app with background work beside it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on `host`:`port` (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_host(host: str) -> str:
    """`host` as it goes in a URL: IPv6 addresses in brackets."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


async def serve_asgi(
    make_app: Callable[[int], Any],
    host: str,
    port: int,
    *,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    on_ready: Callable[[int], None] | None = None,
    lifespan: str = "off",
) -> None:
    """Bind `host`:`port`, build the app for the port actually bound (`make_app(port)`), start the
    `background` work, call `on_ready(port)` once listening, and serve until cancelled."""
    import anyio
    import uvicorn

    sock = bind(host, port)
    actual = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(actual), log_level="warning", lifespan=lifespan))
    async with anyio.create_task_group() as group:
        for work in background:
            group.start_soon(work)
        if on_ready is not None:
            on_ready(actual)
        try:
            await server.serve(sockets=[sock])
        finally:
            group.cancel_scope.cancel()


def primary_address() -> str:
    """This machine's IPv4 address on its default route (what other machines reach it at); loopback
    when it has none. Connecting a UDP socket sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
