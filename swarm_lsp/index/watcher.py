"""Keeps the index fresh: file events -> one batched incremental sync per burst.

watchfiles already groups events until the tree has been quiet for `debounce_ms`, so a `git
checkout` touching 1,000 files arrives as one set and becomes one sync. The same ignore rules as
the scanner decide what matters; a changed .gitignore re-plans the whole tree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

from swarm_lsp.basics import CancellationToken
from swarm_lsp.index.ignore import IgnoreRules
from swarm_lsp.index.indexer import Indexer
from swarm_lsp.index.plan import SyncReport

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
"""After a failed sync the watcher waits this long, doubling on each failure, up to RETRY_MAX_S."""
RETRY_MAX_S = 60.0


class Watcher:
    def __init__(
        self,
        indexer: Indexer,
        rules: IgnoreRules,
        *,
        debounce_ms: int = 400,
        embed: bool = True,
        on_sync: Callable[[SyncReport], None] | None = None,
        force_polling: bool | None = None,
    ) -> None:
        self.indexer = indexer
        self.rules = rules
        self.root = rules.root
        self.debounce_ms = debounce_ms
        self.embed = embed
        self.on_sync = on_sync
        self.force_polling = force_polling
        self.syncs = 0
        """Completed syncs (observable by tests and the status command)."""
        self.error: str | None = None
        """Why the last sync failed (a full disk, say); None once a sync succeeds again."""
        self._failures = 0
        self._retry_at = 0.0
        self._stop = threading.Event()
        """watchfiles' stop signal; `_cancel` is the same signal for the indexer's embedding."""
        self._cancel = CancellationToken()
        self._resumed = threading.Event()
        self._resumed.set()
        self._pending: set[str] = set()
        self._rescan = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="swarm-lsp-watcher", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._cancel.cancel()
        self._resumed.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pause(self) -> None:
        """Events are still collected while paused; they are synced on resume."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    # ------------------------------------------------------------------- the loop

    def _accept(self, change: watchfiles.Change, path: str) -> bool:
        try:
            rel = Path(path).resolve().relative_to(self.root).as_posix() if path else ""
        except ValueError:
            return False
        if not rel:
            return False
        if rel.endswith(".gitignore"):
            return True
        return not self.rules.ignored(rel)

    def _run(self) -> None:
        self._ready.set()
        try:
            for changes in watchfiles.watch(
                self.root,
                watch_filter=self._accept,
                debounce=self.debounce_ms,
                step=50,
                stop_event=self._stop,
                yield_on_timeout=True,
                rust_timeout=500,
                force_polling=self.force_polling,
                raise_interrupt=False,
            ):
                self._collect(changes)
                if self._stop.is_set():
                    break
                if self.paused or not (self._pending or self._rescan) or time.monotonic() < self._retry_at:
                    continue
                self._sync_pending()
        except Exception:  # the watcher must never take the server down; it logs and stops
            log.exception("file watcher stopped")

    def _collect(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        for _change, path in changes:
            try:
                rel = Path(path).resolve().relative_to(self.root).as_posix()
            except ValueError:
                continue
            if rel.endswith(".gitignore"):
                self._rescan = True
            else:
                self._pending.add(rel)

    def _sync_pending(self) -> None:
        paths, rescan = sorted(self._pending), self._rescan
        self._pending.clear()
        self._rescan = False
        try:
            report = self.indexer.sync(None if rescan else paths, embed=False)
            if self.embed:
                self.indexer.embed_backlog(cancel=self._cancel)
        except Exception as error:
            # Retry with a whole-tree scan (cheap: unchanged files are only stat'ed), so whatever a
            # failure left unindexed is caught up, and back off so a lasting fault (a full disk) is
            # not hammered twice a second.
            self._pending.update(paths)
            self._rescan = True
            self._failures += 1
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            if str(error) != self.error:
                log.warning("sync after file changes failed (%s); retrying in %.0f s", error, delay)
            self.error = str(error)
            return
        self.error, self._failures, self._retry_at = None, 0, 0.0
        self.syncs += 1
        if self.on_sync is not None:
            self.on_sync(report)
