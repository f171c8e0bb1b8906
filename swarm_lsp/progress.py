"""Progress of long index work: the events the indexer reports, and a one-line terminal display.

A basic type: the index emits these events, and every front door renders them its own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Progress:
    phase: str  # "scan" | "parse" | "embed" | "done"
    done: int
    total: int
    chunks: int = 0
    rate: float = 0.0  # items per second in this phase
    detail: str = ""

    @property
    def eta_s(self) -> float | None:
        if self.rate <= 0 or self.total <= self.done:
            return None
        return (self.total - self.done) / self.rate


ProgressCallback = Callable[[Progress], None]


class ProgressLine:
    """Renders Progress events on one terminal line (files, chunks, rate, ETA); silent when not a TTY."""

    def __init__(self, stream: TextIO, *, min_interval_s: float = 0.1) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self._last = 0.0
        self._interval = min_interval_s
        self._phase = ""

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        phase_changed = event.phase != self._phase
        if not phase_changed and now - self._last < self._interval and event.done < event.total:
            return
        self._last = now
        if phase_changed and self._phase and self.interactive:
            self.stream.write("\n")
        self._phase = event.phase
        text = self._describe(event)
        if self.interactive:
            self.stream.write("\r\033[K" + text)
        elif phase_changed or event.done == event.total:
            self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def _describe(event: Progress) -> str:
        eta = f", ETA {event.eta_s:.0f}s" if event.eta_s is not None else ""
        if event.phase == "scan":
            return f"scanned: {event.total} files to parse ({event.detail})"
        if event.phase == "parse":
            rate = f"{event.rate:.0f} files/s"
            return f"parsing {event.done}/{event.total} files, {event.chunks} chunks, {rate}{eta}"
        if event.phase == "embed":
            return f"embedding {event.done}/{event.total} chunks, {event.rate:.1f} chunks/s{eta}"
        return f"done: {event.done} files, {event.chunks} chunks"

    def finish(self) -> None:
        if self.interactive and self._phase:
            self.stream.write("\n")
            self.stream.flush()
