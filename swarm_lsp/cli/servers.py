"""The server subcommands: `serve` (LSP), `mcp` (MCP tools) and `api` (HTTP API and dashboard)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from swarm_lsp.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    UsageError,
    configure_logging,
    token_of,
    workspace_of,
)


def serve(args: argparse.Namespace) -> int:

    from swarm_lsp.lsp import parse_address, serve

    transport, address = "stdio", None
    try:
        if args.tcp:
            transport, address = "tcp", parse_address(args.tcp)
        elif args.ws:
            transport, address = "ws", parse_address(args.ws)
    except ValueError as error:
        print(f"swarm-lsp serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args)
    serve(transport, address)
    return 0


def mcp(args: argparse.Namespace) -> int:

    from swarm_lsp.mcp import serve_http, serve_stdio
    from swarm_lsp.sockets import is_loopback
    from swarm_lsp.tools.toolbox import Toolbox

    token = token_of(args, "swarm-lsp mcp")
    if not args.http and (token or args.host != "127.0.0.1"):
        print("swarm-lsp mcp: --host, --token and --token-file apply to --http only", file=sys.stderr)
        return EXIT_USAGE
    if args.http and not is_loopback(args.host) and not token:
        print(
            f"swarm-lsp mcp: binding {args.host} exposes the workspace tools beyond this machine; "
            "pass --token (or --token-file) so every request must carry Authorization: Bearer <token>",
            file=sys.stderr,
        )
        return EXIT_USAGE
    configure_logging(args)

    async def serve() -> None:
        workspace = workspace_of(args)
        toolbox = Toolbox(workspace, read_only=True if args.read_only else None)
        toolbox.start()
        try:
            if args.http:
                await serve_http(
                    toolbox,
                    host=args.host,
                    port=args.tool_port,
                    token=token,
                    on_ready=lambda url: print(f"swarm-lsp MCP server at {url}", file=sys.stderr, flush=True),
                )
            else:
                await serve_stdio(toolbox)
        finally:
            await asyncio.to_thread(toolbox.close)
            await workspace.aclose()

    try:
        asyncio.run(serve())
    except OSError as error:
        print(
            f"swarm-lsp mcp: cannot serve on {args.host}:{args.tool_port}: {error.strerror}", file=sys.stderr
        )
        return EXIT_FAILURE
    return 0


def api(args: argparse.Namespace) -> int:
    from swarm_lsp.api import TokenRequired, check_exposure, serve

    token = token_of(args, "swarm-lsp api")
    try:
        check_exposure(args.host, token)
    except TokenRequired as error:
        raise UsageError(f"swarm-lsp api: {error}") from None
    configure_logging(args)

    async def run() -> None:
        workspace = workspace_of(args)
        try:
            await serve(
                workspace,
                host=args.host,
                port=args.port,
                token=token,
                allow_hosts=args.allow_host,
                on_ready=lambda url: print(f"swarm-lsp API at {url}", file=sys.stderr, flush=True),
            )
        finally:
            await workspace.aclose()

    try:
        asyncio.run(run())
    except OSError as error:
        print(f"swarm-lsp api: cannot serve on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
