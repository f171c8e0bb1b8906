"""Admission to the one loaded model: requests wait their turn in order, and a full queue says so.

A local model answers one request at a time (its voters decode together as one batch), so the
requests of every front door wait here, first come first served. The queue is bounded: a request
that would wait behind `limit` others is refused at once with `QueueFull`, which says how long to
wait before trying again (the HTTP API answers 429 with Retry-After), so nothing hangs.

One event loop: the queue's waiters are futures of the loop that runs the requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator

from swarm_lsp.basics import SwarmLspError

RECENT_RUNS = 10
"""Durations kept to estimate how long a request holds the model."""
FIRST_GUESS_S = 10.0
"""The estimate before any request has finished."""


class QueueFull(SwarmLspError):
    """Too many requests are waiting for the model; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestQueue:
    def __init__(self, limit: int, *, concurrency: int = 1) -> None:
        """`limit` requests may wait (0: none; a request is refused while another runs)."""
        self.limit = limit
        self.concurrency = concurrency
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._durations: collections.deque[float] = collections.deque(maxlen=RECENT_RUNS)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_s(self) -> int:
        """Seconds until a place is likely to free up: the mean recent run times the line ahead."""
        mean = sum(self._durations) / len(self._durations) if self._durations else FIRST_GUESS_S
        ahead = (self.waiting + self.running) / max(1, self.concurrency)
        return max(1, math.ceil(mean * max(1.0, ahead)))

    def check(self) -> None:
        """Raise QueueFull if a request arriving now would be refused (the HTTP API asks before it
        starts a streamed response, whose status is sent at once)."""
        if (self.running >= self.concurrency or self._waiters) and self.waiting >= self.limit:
            retry = self.retry_after_s()
            raise QueueFull(
                f"the model is busy: {self.running} request(s) running and {self.waiting} waiting "
                f"(the limit is {self.limit}); try again in about {retry} s",
                retry,
            )

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for this request's turn (FIFO) and hold the model until the block ends. Raises
        QueueFull at once when `limit` requests are already waiting."""
        self.check()
        if self.running >= self.concurrency or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._release()  # our turn came as we were cancelled: pass it on
                raise
        else:
            self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._durations.append(time.monotonic() - started)
            self._release()

    def _release(self) -> None:
        """End a turn: hand the model straight to the first live waiter, else free the place."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes on: `running` stays the same
                return
        self.running -= 1
