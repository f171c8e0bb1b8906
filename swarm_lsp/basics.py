"""What every layer shares: the base error and the cancellation token.

This module sits below everything else in swarm_lsp and imports nothing from it.
"""

from __future__ import annotations

import threading


class SwarmLspError(Exception):
    """Base of every error swarm-lsp raises on purpose; its message tells the user what to do."""


class CancellationToken:
    """A flag checked by long work (decoders once per token step, the indexer once per batch).

    Thread-safe; cancel() is idempotent. `wait` lets a worker sleep until cancelled.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or `timeout` seconds pass; True when cancelled."""
        return self._event.wait(timeout)
