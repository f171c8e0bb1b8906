"""`swarm-lsp mcp` as a real process: stdio through the SDK's stdio client (both protocol eras, an
approval over the wire), streamable HTTP on a loopback port, a non-loopback bind that needs a token
(401 without it), the MCP Inspector CLI, and `swarm-lsp audit` reading what the calls left."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from server_processes import serving
from test_mcp_support import FILES, Elicitor, text, write_tree

pytestmark = pytest.mark.slow

SWARM_LSP = str(Path(sys.executable).with_name("swarm-lsp"))


@pytest.fixture
def workspace(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "ws"
    root.mkdir()
    write_tree(root, FILES)
    env = dict(
        os.environ,
        SWARM_LSP_CONFIG_FILE=str(tmp_path / "none.toml"),
        SWARM_LSP_CACHE_DIR=str(tmp_path / "cache"),
        SWARM_LSP_INDEX__EMBEDDER="none",
    )
    return root, env


@contextlib.contextmanager
def http_server(args: list[str], env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """Run `swarm-lsp mcp --http ...`; yields its URL (from its stderr) and its stderr lines so far."""
    command = [SWARM_LSP, "mcp", "--http", "--tool-port", "0", *args]
    with serving(command, env, "MCP server at", timeout=60) as server:
        yield server.url, server.lines


# ------------------------------------------------------------------------------------------ stdio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_server_serves_tools_and_asks_for_approval(workspace, mode):
    root, env = workspace
    params = StdioServerParameters(command=SWARM_LSP, args=["mcp", "--workspace", str(root)], env=env)
    user = Elicitor("accept")
    async with Client(params, mode=mode, elicitation_callback=user) as client:
        expected = "2026-07-28" if mode == "auto" else "2025-11-25"
        assert client.protocol_version == expected
        names = {tool.name for tool in (await client.list_tools()).tools}
        search = await client.call_tool("search_code", {"query": "greet"})
        written = await client.call_tool(
            "write_file", {"path": f"from_{mode}.txt", "content": "over stdio\n"}
        )
        secret = await client.call_tool("read_file", {"path": ".env"})
    assert {"search_code", "write_file", "run_command", "ask_swarm"} <= names
    assert any(hit["path"] == "pkg/greeting.py" for hit in search.structured_content["hits"])
    assert not written.is_error and (root / f"from_{mode}.txt").read_text() == "over stdio\n"
    assert len(user.messages) == 1 and f"create from_{mode}.txt" in user.messages[0]
    assert secret.is_error

    listed = subprocess.run(
        [SWARM_LSP, "audit", "--workspace", str(root), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [entry["tool"] for entry in entries] == ["search_code", "write_file", "read_file"]
    assert entries[1]["decided_by"] == "user" and entries[1]["client"].endswith("(stdio)")
    assert entries[2]["decided_by"] == "sandbox"
    shown = subprocess.run(
        [SWARM_LSP, "audit", "-w", str(root)], env=env, capture_output=True, text=True, check=True
    )
    assert "write_file [write] allow by user" in shown.stdout


async def test_stdio_read_only_flag(workspace):
    root, env = workspace
    params = StdioServerParameters(command=SWARM_LSP, args=["mcp", "-w", str(root), "--read-only"], env=env)
    async with Client(params) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "write_file" not in names and "run_command" not in names and "read_file" in names


# ------------------------------------------------------------------------------------------- http


async def test_http_on_loopback(workspace):
    root, env = workspace
    with http_server(["-w", str(root)], env) as (url, _lines):
        assert url.startswith("http://127.0.0.1:")
        async with Client(url) as client:
            result = await client.call_tool("find_symbol", {"name": "greet"})
            status = await client.read_resource("swarm-lsp://index/status")
        user = Elicitor("accept")
        async with Client(url, mode="legacy", elicitation_callback=user) as client:
            written = await client.call_tool("write_file", {"path": "over_http.txt", "content": "sse\n"})
        rebinding = httpx2.post(url, json={}, headers={"Host": "evil.example:80"})
    assert result.structured_content["symbols"][0]["path"] == "pkg/greeting.py"
    assert json.loads(status.contents[0].text)["root"] == str(root)
    assert (
        not written.is_error and (root / "over_http.txt").read_text() == "sse\n" and len(user.messages) == 1
    )
    assert rebinding.status_code in (403, 421), "a foreign Host header must be refused on loopback"


def test_a_non_loopback_bind_without_a_token_is_refused(workspace):
    root, env = workspace
    done = subprocess.run(
        [SWARM_LSP, "mcp", "-w", str(root), "--http", "--host", "0.0.0.0", "--tool-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--token" in done.stderr and "0.0.0.0" in done.stderr


async def test_a_non_loopback_bind_needs_the_token_on_every_request(workspace, tmp_path):
    root, env = workspace
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-" + "x" * 30 + "\n")
    token = token_file.read_text().strip()
    with http_server(["-w", str(root), "--host", "0.0.0.0", "--token-file", str(token_file)], env) as (
        url,
        _,
    ):
        local = url.replace("0.0.0.0", "127.0.0.1")
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        accept = {"Accept": "application/json, text/event-stream"}
        anonymous = httpx2.post(local, json=initialize, headers=accept)
        wrong = httpx2.post(local, json=initialize, headers=accept | {"Authorization": "Bearer nope"})
        health = httpx2.get(local.replace("/mcp", "/"))
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(local, http_client=http)) as client,
        ):
            result = await client.call_tool("read_file", {"path": "README.md"})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert health.status_code == 401
    assert not result.is_error and "Tiny app" in text(result)


# -------------------------------------------------------------------------------------- inspector


INSPECTOR = Path(__file__).resolve().parent.parent / ".cache" / "npm-tools" / "node_modules" / ".bin"


def test_mcp_inspector_cli_lists_tools_and_calls_search_code(workspace):
    program = INSPECTOR / "mcp-inspector"
    if not program.exists():
        pytest.fail(
            f"the MCP Inspector CLI is not installed at {program}: run `make mcp-inspector` "
            "(make test does) to install it from npm once"
        )
    root, env = workspace
    server = [SWARM_LSP, "mcp", "--workspace", str(root)]
    # Pinned in the Makefile (INSPECTOR_VERSION): the version this test was written against.
    inspector = [str(program), "--cli", *server]
    listed = subprocess.run(
        [*inspector, "--method", "tools/list"], env=env, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    tools = {tool["name"]: tool for tool in json.loads(listed.stdout)["tools"]}
    assert tools["search_code"]["annotations"]["readOnlyHint"] is True
    assert tools["delete_file"]["annotations"]["destructiveHint"] is True
    called = subprocess.run(
        [*inspector, "--method", "tools/call", "--tool-name", "search_code", "--tool-arg", "query=greet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert called.returncode == 0, called.stderr[-2000:]
    result = json.loads(called.stdout)
    assert result["isError"] is False
    assert any(hit["path"] == "pkg/greeting.py" for hit in result["structuredContent"]["hits"])
