"""MCP tool latency through the stdio transport: search_code and read_file, cold and cached.

    python bench/mcp_latency.py [--project werkzeug] [--version 3.1.3] [--calls 60] [--mode auto|legacy]

Setup: a copy of the pinned sdist (werkzeug 3.1.3, all of it), served by a real `swarm-lsp mcp`
process that the MCP SDK's stdio client starts, as an agent host would. The index is full text
only (`index.embedder = "none"`) so no background embedding competes for the cores; the server's
first index sync is awaited (one `index_status` call) and one warm-up call per tool is made
before anything is timed.

Timed, client side, from `call_tool` to its result:

  search_code cold:   N distinct queries (identifiers and words from the project), first time each;
  search_code cached: the same N queries again (answered from the result cache);
  read_file cold:     N distinct source files, first read each;
  read_file cached:   the same N files again (the cache re-checks each file's stat on a hit);
  tools/list:         N listings, for the floor: the transport and protocol without any tool work.

Prints markdown: p50 and p95 in milliseconds, plus the cache hits the audit log recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import count_files, fresh_copy, load_average, machine_line, project_source, scratch_dir

_QUERY_WORDS = """
Request Response BaseResponse get_data parse_cookie dump_cookie url_quote url_unquote MultiDict
Headers EnvironHeaders ImmutableMultiDict FileStorage secure_filename redirect abort HTTPException
NotFound BadRequest Map Rule MapAdapter build_url match routing converter run_simple
DebuggedApplication generate_password_hash check_password_hash parse_accept_header
parse_options_header content_type mimetype charset ETag cache_control WWW-Authenticate Authorization
LocalProxy local_stack shared_data SharedDataMiddleware ProxyFix DispatcherMiddleware http_date
parse_date iri_to_uri uri_to_iri stream_encode_multipart FormDataParser LimitedStream wsgi_to_bytes
get_host get_current_url test_client EnvironBuilder Client open follow_redirects websocket upgrade
chunked transfer encoding range request if_modified
"""
QUERIES = _QUERY_WORDS.split()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> None:
    from mcp import Client, StdioServerParameters

    source = project_source(args.project, args.version)
    scratch = scratch_dir("mcp-latency")
    root = fresh_copy(source, scratch / "workspace")
    env = dict(
        os.environ,
        SWARM_LSP_CONFIG_FILE=str(scratch / "none.toml"),
        SWARM_LSP_INDEX__EMBEDDER="none",
        SWARM_LSP_INDEX__LOCATION=str(scratch / "index"),
    )
    swarm_lsp = str(Path(sys.executable).with_name("swarm-lsp"))
    params = StdioServerParameters(command=swarm_lsp, args=["mcp", "--workspace", str(root)], env=env)
    files = sorted(
        str(path.relative_to(root)) for path in root.rglob("*.py") if "/." not in str(path.relative_to(root))
    )[: args.calls + 1]
    queries = QUERIES[: args.calls + 1]
    timings: dict[str, list[float]] = {}

    async def timed(label: str, client: Client, tool: str, arguments: dict) -> None:
        started = time.perf_counter()
        result = await client.call_tool(tool, arguments)
        elapsed = (time.perf_counter() - started) * 1000
        if result.is_error:
            raise RuntimeError(f"{tool} {arguments} failed: {result.content}")
        timings.setdefault(label, []).append(elapsed)

    started = time.perf_counter()
    async with Client(params, mode=args.mode) as client:
        connected = time.perf_counter() - started
        status = await client.call_tool("index_status", {})  # waits for the first index sync
        indexed = time.perf_counter() - started
        await client.call_tool("search_code", {"query": queries[0]})
        await client.call_tool("read_file", {"path": files[0]})
        for _ in range(len(queries) - 1):  # the transport's floor: a request that does no tool work
            began = time.perf_counter()
            await client.list_tools(cache_mode="bypass")
            timings.setdefault("tools/list (no tool work)", []).append((time.perf_counter() - began) * 1000)
        for query in queries[1:]:
            await timed("search_code cold", client, "search_code", {"query": query})
        for query in queries[1:]:
            await timed("search_code cached", client, "search_code", {"query": query})
        for path in files[1:]:
            await timed("read_file cold", client, "read_file", {"path": path})
        for path in files[1:]:
            await timed("read_file cached", client, "read_file", {"path": path})
        protocol = client.protocol_version
    audit = scratch / "index" / "audit.jsonl"
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    hits = sum(1 for entry in entries if entry["cached"])

    info = status.structured_content or {}
    print(f"MCP latency over stdio: {args.project} {args.version}, {count_files(root)} files")
    print(f"({info.get('files')} indexed, {info.get('chunks')} chunks, full text only); protocol {protocol}.")
    print(f"{machine_line()}; load {load_average()}.")
    print(f"Server start to connected: {connected:.2f} s; to first index sync done: {indexed:.2f} s.")
    print()
    print("| call | n | p50 ms | p95 ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    for label, values in timings.items():
        print(
            f"| {label} | {len(values)} | {percentile(values, 0.5):.2f} | {percentile(values, 0.95):.2f} "
            f"| {statistics.fmean(values):.2f} |"
        )
    print()
    print(f"Audit log: {len(entries)} calls recorded, {hits} answered from the cache.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default="werkzeug")
    parser.add_argument("--version", default="3.1.3")
    parser.add_argument("--calls", type=int, default=60, help="distinct queries and files per measurement")
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"], help="MCP protocol era")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
