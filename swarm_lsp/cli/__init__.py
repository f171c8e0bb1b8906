"""The `swarm-lsp` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from swarm_lsp import __version__
from swarm_lsp.basics import SwarmLspError
from swarm_lsp.cli import commands, peers, servers
from swarm_lsp.cli.common import EXIT_FAILURE, EXIT_USAGE, UsageError, add_token_options
from swarm_lsp.config import VOTING_STRATEGIES, ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"swarm-lsp: settings problem:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    except SwarmLspError as error:
        print(f"swarm-lsp: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("swarm-lsp: cancelled", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm-lsp", description="A local AI assistant server for code editors."
    )
    parser.add_argument("--version", action="version", version=f"swarm-lsp {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = subcommands.add_parser("serve", help="run the language server (LSP) for an editor")
    transport = serve.add_mutually_exclusive_group()
    transport.add_argument("--stdio", action="store_true", help="speak LSP over stdin/stdout (default)")
    transport.add_argument(
        "--tcp", metavar="HOST:PORT", help="listen for one editor over TCP (loopback only)"
    )
    transport.add_argument("--ws", metavar="HOST:PORT", help="listen over WebSocket (loopback only)")
    serve.add_argument("--log-file", type=Path, default=None, help="write the server's log here")
    serve.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    serve.set_defaults(handler=servers.serve)

    mcp = _command(
        subcommands, "mcp", "serve the workspace tools over MCP (stdio, or HTTP with --http)", servers.mcp
    )
    mcp.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    mcp.add_argument(
        "--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1; others need --token)"
    )
    mcp.add_argument(
        "--tool-port", type=int, default=17616, help="HTTP port (default 17616; 0 picks a free one)"
    )
    add_token_options(mcp)
    mcp.add_argument("--read-only", action="store_true", help="list and allow only the read tools")
    mcp.add_argument("--log-file", type=Path, default=None, help="write the server's log here")
    mcp.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    api = _command(
        subcommands, "api", "serve the OpenAI-compatible HTTP API and the dashboard (port 17615)", servers.api
    )
    api.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --token)"
    )
    api.add_argument("--port", type=int, default=17615, help="port (default 17615; 0 picks a free one)")
    add_token_options(api)
    api.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name clients may use (the Host header is checked against DNS rebinding)",
    )
    api.add_argument("--log-file", type=Path, default=None, help="write the server's log here")
    api.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    audit = _command(
        subcommands,
        "audit",
        "print the MCP tool calls recorded for the workspace",
        commands.audit,
        json="print the entries as JSON lines",
    )
    audit.add_argument("-n", "--last", type=int, default=50, help="how many of the latest calls (0 = all)")
    audit.add_argument("--tool", default=None, help="only calls of this tool")

    _command(
        subcommands,
        "doctor",
        "what this machine can run, and why",
        commands.doctor,
        json="print the report as JSON",
    )

    models = _command(
        subcommands,
        "models",
        "list known and local models; `models pull NAME`",
        commands.models_list,
        json="print as JSON",
    )
    model_commands = models.add_subparsers(title="model commands", metavar="ACTION")
    pull = model_commands.add_parser("pull", help="download a catalog model (needs the internet)")
    pull.add_argument(
        "name",
        help="catalog name, optionally NAME:QUANT (e.g. qwen2.5-coder-1.5b-instruct:Q8_0), or an "
        "embedding model for the index (potion-code-16m, nomic-embed-text-v1.5)",
    )
    pull.add_argument(
        "--format",
        choices=["gguf", "mlx"],
        default=None,
        help="default: what this machine runs (embedding models have their own format)",
    )
    pull.set_defaults(handler=commands.models_pull)

    index = _command(
        subcommands,
        "index",
        "index the workspace (incremental), or show its status",
        commands.index,
        json="print the result as JSON",
    )
    index.add_argument("--status", action="store_true", help="show files, chunks, embedder, backlog, size")
    index.add_argument("--no-embed", action="store_true", help="parse and write only; embed later")
    index.add_argument(
        "--gc", action="store_true", help="remove the index data of workspaces that no longer exist"
    )
    index.add_argument("--dry-run", action="store_true", help="with --gc: say what would be removed")

    search = _command(
        subcommands, "search", "search the workspace index", commands.search, json="print results as JSON"
    )
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--mode", choices=["hybrid", "fts", "vector"], default="hybrid")

    ask = _command(
        subcommands,
        "ask",
        "answer a question about the codebase by swarm vote",
        commands.ask,
        json="print the result as JSON",
    )
    ask.add_argument("question")
    ask.add_argument("--voters", type=int, default=None, help="voters (default: settings, else what fits)")
    ask.add_argument(
        "--strategy",
        choices=VOTING_STRATEGIES,
        default=None,
        help="voting strategy",
    )
    ask.add_argument("--file", default=None, help="a file the question is about (workspace-relative)")
    ask.add_argument("--lines", default=None, help="a line range in --file, e.g. 10-40")
    ask.add_argument("--show-candidates", action="store_true", help="print every candidate and its votes")

    generate = _command(
        subcommands,
        "generate",
        "one prompt to the configured model (no retrieval)",
        commands.generate,
        json="print candidates as JSON",
    )
    generate.add_argument("prompt")
    generate.add_argument("-n", type=int, default=1, help="candidates decoded together (default 1)")
    generate.add_argument("--max-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    peers.add_commands(subcommands)
    return parser


def _command(
    subcommands: argparse._SubParsersAction,
    name: str,
    help: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    json: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand about a workspace (--workspace), with --json when `json` (its help) is given."""
    parser = subcommands.add_parser(name, help=help)
    parser.add_argument(
        "--workspace", "-w", type=Path, default=None, help="workspace root (default: current folder)"
    )
    if json is not None:
        parser.add_argument("--json", action="store_true", help=json)
    parser.set_defaults(handler=handler)
    return parser
