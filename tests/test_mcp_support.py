"""Helpers for the MCP and tool tests (this module holds no tests).

`Bench` builds a real workspace in a temp folder (full-text index only, the bundled model with 2
voters and short answers when a swarm tool runs), a `Toolbox` over it, and connects the MCP SDK's
own client to the real server in-process: `mode="auto"` speaks MCP 2026-07-28 (approvals come
back as `input_required`), `mode="legacy"` the 2025-11-25 handshake (approvals are
`elicitation/create` requests).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp import Client
from workspace_support import write_tree

from swarm_lsp.config import load_settings
from swarm_lsp.mcp.server import build_server
from swarm_lsp.tools.audit import read_audit
from swarm_lsp.tools.toolbox import Toolbox
from swarm_lsp.workspace import Workspace

FILES = {
    "pkg/__init__.py": '"""The package."""\n',
    "pkg/greeting.py": '''"""Greetings for the tiny app."""


def greet(name):
    """Say hello to someone by name."""
    return f"hello {name}"


class Registry:
    """Keeps the greeters."""

    def lookup(self, key):
        """The greeter registered under key."""
        return key
''',
    "pkg/uses.py": """from pkg.greeting import Registry, greet


def welcome(user):
    return greet(user) + Registry().lookup("x")
""",
    "README.md": "# Tiny app\n\nIt greets people.\n",
    "notes.txt": "".join(f"line {n}\n" for n in range(1, 101)),
    ".env": "API_KEY=sk-live-secretvalue1234567890\n",
    "deploy/server.pem": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
}


def settings_for(tmp_path: Path, index_location: Path | None = None, **tools: Any) -> dict[str, Any]:
    return {
        "index": {"embedder": "none", "location": str(index_location or tmp_path / "index")},
        "model": {"name": "bundled", "context_length": 2048},
        "swarm": {"voters": 2, "max_tokens": 32},
        "tools": tools,
    }


class Bench:
    """Workspaces and toolboxes made by one test; all closed at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._opened: list[tuple[Toolbox, Workspace]] = []

    def toolbox(
        self,
        files: dict[str, str] | None = None,
        *,
        read_only: bool | None = None,
        watch: bool = False,
        root: Path | None = None,
        index_location: Path | None = None,
        **tools: Any,
    ) -> Toolbox:
        root = root or self.tmp_path / "ws"
        if not root.exists():
            root.mkdir(parents=True)
            write_tree(root, FILES if files is None else files)
        settings = settings_for(self.tmp_path, index_location, **tools)
        loaded = load_settings(root, settings, env={}, user_file=self.tmp_path / "none.toml")
        workspace = Workspace(root, loaded=loaded)
        toolbox = Toolbox(workspace, read_only=read_only, watch=watch)
        toolbox.start()
        self._opened.append((toolbox, workspace))
        return toolbox

    async def aclose(self) -> None:
        for toolbox, workspace in reversed(self._opened):
            toolbox.close()
            await workspace.aclose()


@contextlib.asynccontextmanager
async def connect(
    toolbox: Toolbox,
    *,
    mode: str = "auto",
    elicit: Any = None,
    roots: list[Path] | None = None,
) -> AsyncIterator[Client]:
    """The SDK's client connected in-process to the real server for `toolbox`."""
    list_roots = None
    if roots is not None:

        async def list_roots(context: Any) -> types.ListRootsResult:
            return types.ListRootsResult(roots=[types.Root(uri=root.as_uri()) for root in roots])

    server = build_server(toolbox, transport="memory")
    async with Client(
        server, mode=mode, elicitation_callback=elicit, list_roots_callback=list_roots
    ) as client:
        yield client


class Elicitor:
    """Plays the user: answers every approval prompt the same way and remembers the prompts."""

    def __init__(self, action: str = "accept", approve: bool = True) -> None:
        self.action = action
        self.approve = approve
        self.messages: list[str] = []

    async def __call__(self, context: Any, params: Any) -> types.ElicitResult:
        self.messages.append(params.message)
        content = {"approve": self.approve} if self.action == "accept" else None
        return types.ElicitResult(action=self.action, content=content)


def text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def audit(toolbox: Toolbox) -> list[dict[str, Any]]:
    return list(read_audit(toolbox.audit.path))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (not following symlinks) and its bytes."""
    files = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                files[str(path.relative_to(root))] = path.read_bytes()
    return files
