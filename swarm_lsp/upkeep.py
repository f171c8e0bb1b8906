"""Keeping a served workspace's index fresh: the first sync (once), then the watcher and embedding.

A server (the MCP tools, the HTTP API) calls `ensure()` when it starts or when a request first
needs the index; the first full sync runs once, then the watcher keeps the index up to date and
the chunks still without vectors are embedded on a background thread. `describe()` says where
that stands, for status pages: state, the sync's progress, when the index last changed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from swarm_lsp.basics import CancellationToken
from swarm_lsp.progress import Progress
from swarm_lsp.workspace import SyncReport, Workspace

log = logging.getLogger(__name__)


class IndexUpkeep:
    def __init__(
        self, workspace: Workspace, *, watch: bool, on_change: Callable[[], None] | None = None
    ) -> None:
        """`on_change` is called (on a worker thread) whenever the index changed."""
        self.workspace = workspace
        self.watch = watch
        self.on_change = on_change
        self.state = "starting"  # starting | syncing | embedding | ready | failed
        self.error: str | None = None
        self.progress: Progress | None = None
        self.last_sync: float | None = None
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = CancellationToken()
        self._embedding: threading.Thread | None = None

    @property
    def synced(self) -> bool:
        """Whether the first full sync has finished."""
        return self._synced.is_set()

    async def ensure(self) -> None:
        """The first sync (once), then the watcher and background embedding."""
        if self._synced.is_set():
            return
        await asyncio.to_thread(self._sync_once)

    def close(self) -> None:
        """Stop the first sync (at its next file) and background embedding. The workspace's
        watcher is stopped by the workspace's owner."""
        self._stop.cancel()
        with self._lock:
            pass
        if self._embedding is not None:
            self._embedding.join(timeout=30)
            self._embedding = None

    def describe(self) -> dict[str, Any]:
        progress = self.progress
        return {
            "state": self.state,
            "error": self.error,
            "sync": None
            if progress is None or self.state not in ("syncing", "embedding")
            else {"phase": progress.phase, "done": progress.done, "total": progress.total},
            "last_sync": self.last_sync,
        }

    def _sync_once(self) -> None:
        with self._lock:
            if self._synced.is_set():
                return
            self.state = "syncing"
            try:
                report = self.workspace.index(embed=False, cancel=self._stop, progress=self._on_progress)
            except Exception as error:
                self.state, self.error = "failed", str(error)
                raise
            log.info(
                "index: %d parsed, %d unchanged, %d removed", report.parsed, report.unchanged, report.deleted
            )
            self.last_sync = time.time()
            self._synced.set()
            if self.watch:
                watcher = self.workspace.start_watching()
                earlier = watcher.on_sync

                def on_sync(sync_report: SyncReport) -> None:
                    self._changed()
                    if earlier is not None:
                        earlier(sync_report)

                watcher.on_sync = on_sync
            if self.workspace.embedder is not None and not self._stop.cancelled:
                self.state = "embedding"
                self._embedding = threading.Thread(target=self._embed, name="swarm-lsp-embed", daemon=True)
                self._embedding.start()
            else:
                self.state = "ready"

    def _on_progress(self, event: Progress) -> None:
        self.progress = event

    def _embed(self) -> None:
        try:
            self.workspace.embed_backlog(cancel=self._stop)
        except Exception:  # background work: report and carry on with full-text search
            log.exception("embedding the index backlog failed; search uses full text until the next sync")
        self.state = "ready"
        self._changed()

    def _changed(self) -> None:
        self.last_sync = time.time()
        if self.on_change is not None:
            self.on_change()
