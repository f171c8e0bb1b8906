"""How a peer is doing: latency and speed (moving averages), and a circuit breaker.

The breaker is closed while a peer answers. After `failures_to_open` failures in a row (health
checks or generations) it opens: the peer gets no voters and no checks for `open_seconds`. Then
it is half-open: one check (or one voter) is let through; success closes it, failure opens it
again for twice as long (at most `MAX_OPEN_FACTOR` times `open_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]

EWMA_WEIGHT = 0.3
"""The weight of the newest sample in the moving averages."""
MAX_OPEN_FACTOR = 8
MAX_CHECK_BACKOFF = 12
"""Health checks of a failing peer back off exponentially, to at most this many intervals apart."""


def ewma(previous: float | None, sample: float, weight: float = EWMA_WEIGHT) -> float:
    return sample if previous is None else (1 - weight) * previous + weight * sample


@dataclass
class PeerHealth:
    failures_to_open: int = 3
    open_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    latency_s: float | None = None
    """Round trip of a health check (moving average)."""
    seconds_per_token: float | None = None
    """How fast the peer writes, per voter token and wave of voters (moving average)."""
    failures: int = 0
    """Failures in a row."""
    last_error: str = ""
    last_ok: float | None = None
    opened_at: float | None = None
    open_for: float = 0.0
    _probing: bool = field(default=False, repr=False)

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.open_for:
            return "half-open"
        return "open"

    def usable(self) -> bool:
        """Whether the peer may get voters now: its last check or generation went well (one failure
        is enough to leave it out until a check passes); a half-open peer gets one probe at a time."""
        state = self.state
        if state == "closed":
            return self.failures == 0
        return state == "half-open" and not self._probing

    def probe_started(self) -> None:
        if self.state == "half-open":
            self._probing = True

    def succeeded(self, *, latency_s: float | None = None) -> None:
        self.failures = 0
        self.last_error = ""
        self.last_ok = self.clock()
        self.opened_at = None
        self.open_for = 0.0
        self._probing = False
        if latency_s is not None:
            self.latency_s = ewma(self.latency_s, latency_s)

    def generated(self, elapsed_s: float, tokens: float, load: float) -> None:
        """A generation finished: `tokens` per voter at most, at `load` (scheduler.load) on the peer."""
        if tokens > 0 and load > 0:
            self.seconds_per_token = ewma(self.seconds_per_token, elapsed_s / (tokens * load))
        self.succeeded()

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._probing = False
        if self.state == "half-open":
            self.open_for = min(self.open_for * 2, self.open_seconds * MAX_OPEN_FACTOR)
            self.opened_at = self.clock()
        elif self.opened_at is None and self.failures >= self.failures_to_open:
            self.opened_at = self.clock()
            self.open_for = self.open_seconds

    def next_check_in(self, interval: float) -> float:
        """Seconds until the next health check: the interval, backing off while the peer fails."""
        if self.state == "open":
            assert self.opened_at is not None
            return max(0.0, self.opened_at + self.open_for - self.clock())
        if not self.failures:
            return interval
        return interval * min(2 ** (self.failures - 1), MAX_CHECK_BACKOFF)
