"""The language server front door (pygls): `swarm-lsp serve`. See docs/lsp.md."""

from __future__ import annotations

import os
import sys

from swarm_lsp.sockets import is_loopback


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT (or [::1]:PORT) on a loopback address; ValueError saying what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, for example 127.0.0.1:2087, got {value!r}")
    host = host.strip("[]")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"the port must be from 1 to 65535, got {number}")
    if not is_loopback(host):
        raise ValueError(
            f"the language server only listens on loopback addresses (127.0.0.1, ::1, localhost), "
            f"not {host!r}: it has no authentication"
        )
    return host, number


def serve(transport: str = "stdio", address: tuple[str, int] | None = None) -> None:
    """Run the language server until the client exits (stdio) or forever (tcp, ws)."""
    from swarm_lsp.lsp.server import create_server

    server = create_server()
    if transport == "stdio":
        # The protocol owns the real stdout; anything else written to fd 1 (a print, a native
        # library's log line) goes to stderr instead of corrupting the message stream.
        protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr
        server.start_io(sys.stdin.buffer, protocol_out)
    elif transport == "tcp":
        assert address is not None
        server.start_tcp(*address)
    elif transport == "ws":
        assert address is not None
        server.start_ws(*address)
    else:
        raise ValueError(f"unknown transport {transport!r}; use stdio, tcp or ws")
