"""A language client for the benchmarks: `swarm-lsp serve` over stdio, knowing when indexing ended."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path


class BenchClient:
    """pygls' LanguageClient (`lsp`) that accepts work-done progress and sets `indexed` when the
    server's first indexing progress ends."""

    def __init__(self, name: str) -> None:
        self.lsp = LanguageClient(name, "1")
        self.indexed = asyncio.Event()
        self._index_tokens: set[Any] = set()

        @self.lsp.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(ls: LanguageClient, params: types.WorkDoneProgressCreateParams) -> None:
            return None

        @self.lsp.feature(types.PROGRESS)
        def progress(ls: LanguageClient, params: Any) -> None:
            value = params.value
            kind = getattr(value, "kind", None) or (value.get("kind") if isinstance(value, dict) else None)
            title = getattr(value, "title", None) or (value.get("title") if isinstance(value, dict) else "")
            if kind == "begin" and "indexing" in (title or ""):
                self._index_tokens.add(params.token)
            if kind == "end" and params.token in self._index_tokens:
                self.indexed.set()

    async def start(
        self, root: Path, env: dict[str, str], capabilities: types.ClientCapabilities, timeout: float = 600
    ) -> None:
        """Start the server for the folder `root` and wait until its first indexing ended."""
        await self.lsp.start_io(sys.executable, "-m", "swarm_lsp", "serve", env=env)
        folder = types.WorkspaceFolder(uri=from_fs_path(str(root)), name="bench")
        await self.lsp.initialize_async(
            types.InitializeParams(capabilities=capabilities, workspace_folders=[folder], root_uri=folder.uri)
        )
        self.lsp.initialized(types.InitializedParams())
        await asyncio.wait_for(self.indexed.wait(), timeout)

    async def stop(self) -> None:
        await self.lsp.shutdown_async(None)
        self.lsp.exit(None)
        await self.lsp.stop()
