"""The `swarm-lsp` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm_lsp import __version__
from swarm_lsp.basics import SwarmLspError
from swarm_lsp.config import VOTING_STRATEGIES, ConfigError, LoadedSettings, load_settings
from swarm_lsp.models.base import GenerationRequest, Message, Sampling
from swarm_lsp.progress import ProgressLine

if TYPE_CHECKING:
    from swarm_lsp.workspace import IndexStatus, SyncReport, Workspace

EXIT_USAGE = 2
EXIT_FAILURE = 1


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
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the language server (LSP) for an editor")
    transport = serve.add_mutually_exclusive_group()
    transport.add_argument("--stdio", action="store_true", help="speak LSP over stdin/stdout (default)")
    transport.add_argument(
        "--tcp", metavar="HOST:PORT", help="listen for one editor over TCP (loopback only)"
    )
    transport.add_argument("--ws", metavar="HOST:PORT", help="listen over WebSocket (loopback only)")
    serve.add_argument("--log-file", type=Path, default=None, help="write the server's log here")
    serve.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    serve.set_defaults(handler=_serve)

    mcp = _command(commands, "mcp", "serve the workspace tools over MCP (stdio, or HTTP with --http)", _mcp)
    mcp.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    mcp.add_argument(
        "--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1; others need --token)"
    )
    mcp.add_argument(
        "--tool-port", type=int, default=17616, help="HTTP port (default 17616; 0 picks a free one)"
    )
    token = mcp.add_mutually_exclusive_group()
    token.add_argument(
        "--token", default=None, help="require Authorization: Bearer TOKEN on every HTTP request"
    )
    token.add_argument("--token-file", type=Path, default=None, help="read the token from this file")
    mcp.add_argument("--read-only", action="store_true", help="list and allow only the read tools")
    mcp.add_argument("--log-file", type=Path, default=None, help="write the server's log here")
    mcp.add_argument("-v", "--verbose", action="store_true", help="log debug messages")

    audit = _command(
        commands,
        "audit",
        "print the MCP tool calls recorded for the workspace",
        _audit,
        json="print the entries as JSON lines",
    )
    audit.add_argument("-n", "--last", type=int, default=50, help="how many of the latest calls (0 = all)")
    audit.add_argument("--tool", default=None, help="only calls of this tool")

    _command(
        commands, "doctor", "what this machine can run, and why", _doctor, json="print the report as JSON"
    )

    models = _command(
        commands,
        "models",
        "list known and local models; `models pull NAME`",
        _models_list,
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
    pull.set_defaults(handler=_models_pull)

    index = _command(
        commands,
        "index",
        "index the workspace (incremental), or show its status",
        _index,
        json="print the result as JSON",
    )
    index.add_argument("--status", action="store_true", help="show files, chunks, embedder, backlog, size")
    index.add_argument("--no-embed", action="store_true", help="parse and write only; embed later")

    search = _command(commands, "search", "search the workspace index", _search, json="print results as JSON")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--mode", choices=["hybrid", "fts", "vector"], default="hybrid")

    ask = _command(
        commands,
        "ask",
        "answer a question about the codebase by swarm vote",
        _ask,
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
        commands,
        "generate",
        "one prompt to the configured model (no retrieval)",
        _generate,
        json="print candidates as JSON",
    )
    generate.add_argument("prompt")
    generate.add_argument("-n", type=int, default=1, help="candidates decoded together (default 1)")
    generate.add_argument("--max-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    return parser


def _command(
    commands: argparse._SubParsersAction,
    name: str,
    help: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    json: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand about a workspace (--workspace), with --json when `json` (its help) is given."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument(
        "--workspace", "-w", type=Path, default=None, help="workspace root (default: current folder)"
    )
    if json is not None:
        parser.add_argument("--json", action="store_true", help=json)
    parser.set_defaults(handler=handler)
    return parser


def _settings(args: argparse.Namespace) -> LoadedSettings:
    return load_settings(_root(args))


def _serve(args: argparse.Namespace) -> int:

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
    _configure_logging(args)
    serve(transport, address)
    return 0


def _configure_logging(args: argparse.Namespace) -> None:
    """A server's log: to --log-file (info, or debug with -v), else warnings only on stderr."""
    import logging

    level = logging.DEBUG if args.verbose else logging.INFO
    if args.log_file is not None:
        logging.basicConfig(filename=args.log_file, level=level, format="%(asctime)s %(name)s: %(message)s")
    else:
        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.WARNING)


def _mcp(args: argparse.Namespace) -> int:

    from swarm_lsp.mcp import is_loopback, serve_http, serve_stdio
    from swarm_lsp.tools.toolbox import Toolbox

    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            print(
                f"swarm-lsp mcp: cannot read --token-file {args.token_file}: {error.strerror}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if not token:
            print(f"swarm-lsp mcp: --token-file {args.token_file} is empty", file=sys.stderr)
            return EXIT_USAGE
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
    _configure_logging(args)

    async def serve() -> None:
        workspace = _workspace(args)
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


def _audit(args: argparse.Namespace) -> int:
    from swarm_lsp.tools.audit import read_audit
    from swarm_lsp.tools.toolbox import audit_path

    path = audit_path(_workspace(args))
    entries = [entry for entry in read_audit(path) if args.tool is None or entry.get("tool") == args.tool]
    if args.last > 0:
        entries = entries[-args.last :]
    if args.json:
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        return 0
    if not entries:
        print(f"no tool calls recorded in {path}")
        return 0
    for entry in entries:
        decision = entry.get("decision") or "error"
        by = f" by {entry['decided_by']}" if entry.get("decided_by") else ""
        cached = " cached" if entry.get("cached") else ""
        print(
            f"{entry.get('time', '?')}  {entry.get('client', '?')}  {entry.get('tool', '?')} "
            f"[{entry.get('tier') or '-'}] {decision}{by}{cached}  {entry.get('duration_ms', 0):.1f} ms  "
            f"{entry.get('result_bytes', 0)} B"
        )
        print(f"    {json.dumps(entry.get('arguments'), ensure_ascii=False)[:300]}")
        if entry.get("error"):
            print(f"    error: {entry['error']}")
    print(f"({len(entries)} calls from {path})")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from swarm_lsp.doctor import build_report, render_text
    from swarm_lsp.models.discovery import discover
    from swarm_lsp.models.hardware import detect

    loaded = _settings(args)
    report = build_report(loaded, detect(), discover(loaded.settings.model.search_paths))
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_text(report))
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from swarm_lsp.models.catalog import CATALOG
    from swarm_lsp.models.discovery import discover
    from swarm_lsp.models.embedding_catalog import EMBEDDING_CATALOG
    from swarm_lsp.models.hardware import fmt_bytes

    loaded = _settings(args)
    local = discover(loaded.settings.model.search_paths)
    if args.json:
        catalog = [_entry_json(entry, "name family params_b context_length") for entry in CATALOG]
        found = [
            {
                "name": m.name,
                "path": str(m.path),
                "format": m.format,
                "source": m.source,
                "size_bytes": m.size_bytes,
            }
            for m in local
        ]
        embedding = [
            _entry_json(
                entry,
                "name family",
                embedder=entry.format,
                dimension=entry.dimension,
                description=entry.description,
            )
            for entry in EMBEDDING_CATALOG
        ]
        print(json.dumps({"catalog": catalog, "embedding_catalog": embedding, "local": found}, indent=2))
        return 0
    print("Catalog (download with `swarm-lsp models pull NAME[:QUANT]`)")
    for entry in CATALOG:
        quants = ", ".join(f"{v.quant}/{v.format} {fmt_bytes(v.size_bytes)}" for v in entry.variants)
        print(f"  {entry.name:30} {entry.params_b:>6.2f}B  ctx {entry.context_length:>6}  {quants}")
    print("\nEmbedding models for the index (index.embedder = auto finds a pulled one)")
    for embedder in EMBEDDING_CATALOG:
        quants = ", ".join(f"{v.quant} {fmt_bytes(v.size_bytes)}" for v in embedder.variants)
        print(f"  {embedder.name:30} {embedder.format:6} {embedder.dimension:>5}d  {quants}")
        print(f"  {'':30} {embedder.description}")
    print("\nOn this machine")
    for model in local or []:
        size = fmt_bytes(model.size_bytes)
        print(f"  {model.name:30} {model.format:5} {model.source:11} {size:>10}  {model.path}")
    if not local:
        print("  none")
    return 0


def _entry_json(entry: Any, fields: str, **extra: Any) -> dict[str, Any]:
    """A catalog entry as `models --json` prints it: the named fields, `extra`, then its variants."""
    data = {name: getattr(entry, name) for name in fields.split()} | extra
    return data | {"variants": [variant.__dict__ for variant in entry.variants]}


def _models_pull(args: argparse.Namespace) -> int:
    from swarm_lsp.models.hardware import detect
    from swarm_lsp.models.pull import pull

    fmt = args.format or ("mlx" if detect().accelerator == "apple" else "gguf")
    path = pull(args.name, fmt, progress=lambda text: print(text, file=sys.stderr))
    print(path)
    return 0


def _workspace(args: argparse.Namespace, loaded: LoadedSettings | None = None) -> Workspace:
    from swarm_lsp.workspace import Workspace  # imported here to keep `--help` fast

    root = _root(args)
    return Workspace(root, loaded=loaded or load_settings(root))


def _root(args: argparse.Namespace) -> Path:
    return (args.workspace or Path.cwd()).resolve()


def _index(args: argparse.Namespace) -> int:
    with _workspace(args) as workspace:
        if not args.status:
            unchanged = workspace.unchanged_index(embed=not args.no_embed)
            if unchanged is not None:
                return _print_index(args, *unchanged)
        report = None
        if not args.status:
            bar = None if args.json else ProgressLine(sys.stderr)
            report = workspace.index(progress=bar, embed=not args.no_embed)
            if bar is not None:
                bar.finish()
        return _print_index(args, report, workspace.status())


def _print_index(args: argparse.Namespace, report: SyncReport | None, status: IndexStatus) -> int:
    if args.json:
        data = {"status": status.to_dict()}
        if report is not None:
            data["sync"] = {
                "parsed": report.parsed,
                "deleted": report.deleted,
                "unchanged": report.unchanged,
                "chunks_written": report.chunks_written,
                "embedded": report.embedded,
                "skipped": [{"path": item.path, "reason": item.reason} for item in report.skipped],
                "seconds": report.seconds,
            }
        print(json.dumps(data, indent=2))
        return 0
    if report is not None:
        print(
            f"indexed {report.parsed} files ({report.chunks_written} chunks), "
            f"{report.unchanged} unchanged, "
            f"{report.deleted} removed, {report.embedded} chunks embedded "
            f"in {report.seconds.get('total', 0):.1f}s"
        )
        for item in report.skipped[:20]:
            print(f"  skipped {item.path}: {item.reason}")
        if len(report.skipped) > 20:
            print(f"  ... and {len(report.skipped) - 20} more skipped (see --json)")
    print(_render_status(status))
    return 0


def _render_status(status: IndexStatus) -> str:
    from datetime import datetime

    from swarm_lsp.models.hardware import fmt_bytes

    updated = (
        datetime.fromtimestamp(status.updated_at).isoformat(" ", "seconds") if status.updated_at else "never"
    )
    embedder = status.embedder or f"none ({status.embedder_note or 'full-text search only'})"
    lines = [
        f"index of {status.root}",
        f"  files {status.files}, chunks {status.chunks}, symbols {status.symbols}",
        f"  embedder {embedder}",
        f"  vectors {status.chunks_with_vectors} of {status.chunks} (backlog {status.embedding_backlog})",
        f"  updated {updated}, {fmt_bytes(status.disk_bytes)} at {status.location}",
    ]
    if status.rebuilt_reason:
        lines.append(f"  rebuilt on open: {status.rebuilt_reason}")
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> int:
    with _workspace(args) as workspace:
        hits = workspace.search(args.query, k=args.k, mode=args.mode)
        if args.json:
            print(json.dumps([hit.to_dict() for hit in hits], indent=2))
            return 0
        if not hits:
            print("no results (is the workspace indexed? run `swarm-lsp index`)")
        for hit in hits:
            symbol = f"  {hit.symbol}" if hit.symbol else ""
            print(f"{hit.citation}{symbol}  [{hit.kind}, {hit.score:.3f}, {'+'.join(hit.modes)}]")
            for line in hit.text.splitlines()[:3]:
                print(f"    {line}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from swarm_lsp.basics import CancellationToken
    from swarm_lsp.swarm.tasks import Task, TextRange

    text_range = None
    if args.lines:
        if not args.file:
            raise SystemExit("swarm-lsp ask: --lines needs --file")
        start, _, end = args.lines.partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise SystemExit(
                f"swarm-lsp ask: --lines takes A-B with 1-based line numbers, got {args.lines!r}"
            )
        text_range = TextRange(int(start), int(end or start))
    task = Task(kind="ask", prompt=args.question, path=args.file, range=text_range)
    cancel = CancellationToken()
    with _workspace(args) as workspace:
        workspace.index(embed=False)  # a quick incremental sync; vectors fill in where they exist
        progress = _SwarmProgressLine(sys.stderr)
        try:
            result = asyncio.run(
                workspace.run(
                    task, voters=args.voters, strategy=args.strategy, cancel=cancel, on_progress=progress
                )
            )
        except KeyboardInterrupt:
            cancel.cancel()
            raise
        progress.finish()
    if args.json:
        print(json.dumps(result.to_dict(candidates=args.show_candidates), indent=2))
        return 0
    print(result.answer.strip() or "(no answer)")
    print()
    verdict = "LOW AGREEMENT: treat this answer with care" if result.low_agreement else "agreement"
    finished = len(result.candidates)
    how = f"{result.strategy}, {finished}/{result.voters} voters, {result.model}"
    print(f"{verdict} {result.agreement:.2f} ({how})")
    if result.degraded:
        print("degraded: some voters did not finish; " + "; ".join(result.notes))
    if result.sources:
        print("sources: " + ", ".join(result.sources))
    if args.show_candidates:
        for candidate in result.candidates:
            mark = "*" if candidate.index == result.winner else " "
            state = "valid" if candidate.valid else f"invalid: {candidate.invalid_reason}"
            how = f"T={candidate.temperature}, score {candidate.score}, {state}"
            print(f"\n{mark} candidate {candidate.index} ({how})")
            print(candidate.text.strip())
    return 0


class _SwarmProgressLine:
    """Voters running and tokens so far, on one stderr line (silent when stderr is not a terminal)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.shown = False

    def __call__(self, event) -> None:
        if not self.interactive:
            return
        text = f"{event.phase}: {event.voters} voters, {event.tokens} tokens"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _generate(args: argparse.Namespace) -> int:
    from swarm_lsp.models.hardware import detect
    from swarm_lsp.models.select import open_backend

    loaded = _settings(args)
    backend, run = open_backend(loaded.settings, detect())
    temperature = loaded.settings.swarm.temperature if args.temperature is None else args.temperature
    streaming = args.n == 1 and not args.json

    def show(index: int, text: str) -> None:
        if streaming:
            sys.stdout.write(text)
            sys.stdout.flush()

    request = GenerationRequest(
        messages=[Message("user", args.prompt)],
        n=args.n,
        sampling=Sampling(temperature=temperature),
        max_tokens=args.max_tokens,
        on_token=show,
    )
    print(f"[{backend.info.backend}: {backend.info.model}, context {run.context}]", file=sys.stderr)

    async def go() -> list:
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    candidates = asyncio.run(go())
    if args.json:
        print(json.dumps([c.__dict__ | {"sampling": c.sampling.__dict__} for c in candidates], indent=2))
    elif streaming:
        print()
    else:
        for candidate in candidates:
            print(f"--- candidate {candidate.index} ({candidate.finish_reason})\n{candidate.text}")
    return 0
