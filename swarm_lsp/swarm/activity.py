"""What the swarm is doing: recent requests, their voters' progress, and how each vote went.

The core records every request it runs here (`Workspace.run`); a front door that shows activity
(the dashboard) reads `snapshot()` and subscribes to changes. Records are plain JSON-ready dicts
(`RequestRecord.to_dict`). Updates come from the decoding thread; subscribers are called on that
thread, at most every `UPDATE_INTERVAL_S` per request while it generates (and always when a request
starts, votes or ends), so they must be quick and thread-safe (hand the record to an event loop).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarm_lsp.redaction import redact_message
from swarm_lsp.swarm.engine import SwarmProgress

KEPT = 50
"""Requests remembered, newest first."""
UPDATE_INTERVAL_S = 0.25
PROMPT_SHOWN = 300
CANDIDATE_SHOWN = 4000

Subscriber = Callable[[dict[str, Any]], None]


@dataclass
class RequestRecord:
    id: str
    door: str
    kind: str
    model: str
    prompt: str
    voters: int
    max_tokens: int
    state: str = "queued"  # queued | running | voting | done | failed | cancelled
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    voter_tokens: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    temperatures: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        workers = []
        for index, tokens in enumerate(self.voter_tokens):
            if self.state == "queued":
                state = "queued"
            elif self.state == "running" and tokens < self.max_tokens:
                state = "running"
            else:
                state = "done"
            progress = 1.0 if state == "done" else min(1.0, tokens / max(1, self.max_tokens))
            workers.append(
                {
                    "index": index,
                    "tokens": tokens,
                    "tokens_per_s": round(tokens / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
                    "progress": round(progress, 3),
                    "state": state,
                    "temperature": self.temperatures[index] if index < len(self.temperatures) else None,
                }
            )
        return {
            "id": self.id,
            "door": self.door,
            "kind": self.kind,
            "model": self.model,
            "prompt": self.prompt,
            "state": self.state,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "voters": self.voters,
            "max_tokens": self.max_tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            "workers": workers,
            "result": self.result,
            "error": self.error,
        }


class Activity:
    """The recent requests of one workspace, and who wants to hear about them."""

    def __init__(self) -> None:
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=KEPT)
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._last_sent: dict[str, float] = {}

    # ------------------------------------------------------------------------ reading

    def snapshot(self) -> list[dict[str, Any]]:
        """Every remembered request, newest first."""
        with self._lock:
            return [record.to_dict() for record in reversed(self._records)]

    def running(self) -> list[RequestRecord]:
        with self._lock:
            return [record for record in self._records if record.state in ("running", "voting")]

    def busy_sequences(self) -> int:
        """Voters of the requests waiting for the model or running on it (the load peers are told)."""
        with self._lock:
            states = ("queued", "running", "voting")
            return sum(record.voters for record in self._records if record.state in states)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber(record_dict)` on every change; returns the function that unsubscribes."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    # ------------------------------------------------------------------------ recording

    def begin(
        self, *, door: str, kind: str, model: str, prompt: str, voters: int, max_tokens: int
    ) -> RequestRecord:
        shown = " ".join(prompt.split())
        record = RequestRecord(
            id=f"r{next(self._ids)}",
            door=door,
            kind=kind,
            model=model,
            prompt=redact_message(shown[:PROMPT_SHOWN] + ("..." if len(shown) > PROMPT_SHOWN else "")),
            voters=voters,
            max_tokens=max_tokens,
            voter_tokens=[0] * voters,
        )
        with self._lock:
            self._records.append(record)
        self._publish(record, force=True)
        return record

    def started(self, record: RequestRecord, temperatures: list[float]) -> None:
        """The request has the model; `temperatures` are its voters' (voter 0 greedy)."""
        record.state = "running"
        record.started_at = time.time()
        record.temperatures = list(temperatures)
        record.voters = len(temperatures)
        record.voter_tokens = [0] * len(temperatures)
        self._publish(record, force=True)

    def progress(self, record: RequestRecord, event: SwarmProgress) -> None:
        """A swarm progress event of `record` (called on the decoding thread)."""
        if event.voter_tokens:
            record.voter_tokens = list(event.voter_tokens)
        if event.max_tokens:
            record.max_tokens = event.max_tokens
        if event.elapsed_s:
            record.elapsed_s = event.elapsed_s
        if event.phase == "voting":
            record.state = "voting"
        self._publish(record, force=event.phase != "generating")

    def finished(self, record: RequestRecord, result: dict[str, Any]) -> None:
        """`result` is `SwarmResult.to_dict()`: the candidates, the vote and the sources are kept."""
        record.state = "done"
        record.finished_at = time.time()
        winner = result.get("winner")
        candidates = result.get("candidates") or []
        for candidate in candidates:
            index = candidate["index"]
            if index < len(record.voter_tokens) and candidate.get("completion_tokens"):
                record.voter_tokens[index] = candidate["completion_tokens"]
        record.result = {
            "agreement": result.get("agreement"),
            "strategy": result.get("strategy"),
            "winner": winner,
            "sources": result.get("sources", []),
            "notes": result.get("notes", []),
            "degraded": result.get("degraded", False),
            "candidates": [
                {
                    "index": candidate["index"],
                    "text": candidate["text"][:CANDIDATE_SHOWN],
                    "score": candidate["score"],
                    "votes": candidate["votes"],
                    "valid": candidate["valid"],
                    "invalid_reason": candidate["invalid_reason"],
                    "finish_reason": candidate["finish_reason"],
                    "winner": candidate["index"] == winner,
                }
                for candidate in candidates
            ],
        }
        self._publish(record, force=True)

    def failed(self, record: RequestRecord, error: str, *, cancelled: bool = False) -> None:
        record.state = "cancelled" if cancelled else "failed"
        record.finished_at = time.time()
        record.error = redact_message(error)
        self._publish(record, force=True)

    def _publish(self, record: RequestRecord, *, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_sent.get(record.id, 0.0) < UPDATE_INTERVAL_S:
                return
            self._last_sent[record.id] = now
            if len(self._last_sent) > 4 * KEPT:
                kept = {r.id for r in self._records}
                self._last_sent = {key: value for key, value in self._last_sent.items() if key in kept}
            subscribers = list(self._subscribers)
            data = record.to_dict()
        for subscriber in subscribers:
            subscriber(data)
