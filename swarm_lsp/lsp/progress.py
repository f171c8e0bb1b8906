"""Work-done progress for long requests, streamed answer text, and the jobs that can be cancelled.

A long request (a swarm run, a reindex) is a `Job`: a `CancellationToken` the core checks once per
token step, findable by the request's id (``$/cancelRequest``) and by its progress token (the
cancel button of the progress, ``window/workDoneProgress/cancel``).

`Progress` reports on a client-given token (``workDoneToken`` in the request) or on one the server
creates when the client supports ``window/workDoneProgress/create``; with neither it stays silent.
Its callbacks may be called from worker threads (the model decodes on one); everything it sends
goes through the event loop. Text answers stream as ``swarm/chatChunk`` notifications, see
docs/lsp.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from swarm_lsp.basics import CancellationToken
from swarm_lsp.progress import Progress as IndexProgress
from swarm_lsp.swarm.engine import SwarmProgress

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

log = logging.getLogger(__name__)

CHAT_CHUNK = "swarm/chatChunk"
REPORT_INTERVAL_S = 0.1
"""At most this often a progress report or a text chunk while voters decode."""
MESSAGE_TAIL = 80
"""Characters of the streamed text shown in a progress report's message."""

_ids = itertools.count(1)


@dataclass
class Job:
    title: str
    request_id: Any = None
    progress_token: types.ProgressToken | None = None
    cancel: CancellationToken = field(default_factory=CancellationToken)
    folder: str = ""
    """The workspace root the job runs in (a settings change there cancels it)."""


class Jobs:
    """The requests running now, by request id and by progress token."""

    def __init__(self) -> None:
        self._running: dict[int, Job] = {}
        self._cancelled_requests: set[Any] = set()

    def start(self, title: str, request_id: Any = None, folder: str = "") -> Job:
        job = Job(title, request_id, folder=folder)
        self._running[next(_ids)] = job
        return job

    def finish(self, job: Job) -> None:
        for key, running in list(self._running.items()):
            if running is job:
                del self._running[key]

    def cancel_request(self, request_id: Any) -> bool:
        found = self._cancel(lambda job: job.request_id is not None and job.request_id == request_id)
        if found:
            self._cancelled_requests.add(request_id)
        return found

    def answered_by_cancel(self, request_id: Any) -> bool:
        """Whether `$/cancelRequest` cancelled this request (pygls has answered it already)."""
        if request_id in self._cancelled_requests:
            self._cancelled_requests.discard(request_id)
            return True
        return False

    def cancel_progress(self, token: types.ProgressToken) -> bool:
        return self._cancel(lambda job: job.progress_token is not None and job.progress_token == token)

    def cancel_folder(self, folder: str) -> bool:
        return self._cancel(lambda job: job.folder == folder)

    def _cancel(self, matches: Callable[[Job], bool]) -> bool:
        found = [job for job in self._running.values() if matches(job)]
        for job in found:
            job.cancel.cancel()
        return bool(found)

    def titles(self) -> list[str]:
        return [job.title for job in self._running.values()]

    def running_in(self, folder: str) -> bool:
        return any(job.folder == folder for job in self._running.values())


class Progress:
    """One request's progress: begin, reports (thread-safe, throttled), end; and streamed text."""

    def __init__(
        self,
        server: LanguageServer,
        token: types.ProgressToken | None,
        *,
        stream: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.loop = asyncio.get_running_loop()
        self.stream = stream
        """The fixed fields of this request's ``swarm/chatChunk`` notifications; None: no streaming."""
        self.tokens = 0
        self.streamed = ""
        self._last_report = 0.0
        self._ended = False

    @classmethod
    async def begin(
        cls,
        server: LanguageServer,
        title: str,
        client_token: types.ProgressToken | None,
        *,
        stream: dict[str, Any] | None = None,
        message: str = "",
        job: Job | None = None,
        percentage: bool = False,
    ) -> Progress:
        """Start reporting; `percentage`: the reports will carry one (the bar starts at 0)."""
        token = client_token
        if token is None and _client_supports_progress(server):
            token = f"swarm-lsp-{uuid.uuid4().hex[:12]}"
            try:
                await server.work_done_progress.create_async(token)
            except Exception as error:  # the client refused: go on without progress
                log.info("the client refused progress token %s: %s", token, error)
                token = None
        progress = cls(server, token, stream=stream)
        if job is not None:
            job.progress_token = token
        if token is not None:
            begin = types.WorkDoneProgressBegin(
                title=title, cancellable=True, message=message or None, percentage=0 if percentage else None
            )
            server.work_done_progress.begin(token, begin)
        return progress

    # ------------------------------------------------------------- reporting

    def report(self, message: str, percentage: int | None = None) -> None:
        """Thread-safe."""
        self.loop.call_soon_threadsafe(self._send_report, message, percentage)

    def _send_report(self, message: str, percentage: int | None) -> None:
        if self.token is None or self._ended:
            return
        report = types.WorkDoneProgressReport(message=message, percentage=percentage, cancellable=True)
        self.server.work_done_progress.report(self.token, report)

    def on_swarm(self, event: SwarmProgress) -> None:
        """The core's swarm progress callback (called from the decoding thread)."""
        self.tokens = max(self.tokens, event.tokens)
        now = time.monotonic()
        first_text = self.stream is not None and event.leader_text.strip() and not self.streamed
        if event.phase == "generating" and not first_text and now - self._last_report < REPORT_INTERVAL_S:
            return
        self._last_report = now
        self.loop.call_soon_threadsafe(self._send_swarm, event)

    def _send_swarm(self, event: SwarmProgress) -> None:
        if self._ended:
            return
        if event.phase == "generating":
            text = event.leader_text
            tail = " ".join(text.split())[-MESSAGE_TAIL:]
            message = f"{event.voters} voters writing, {event.tokens} tokens"
            self._send_report(f"{message}: {tail}" if tail else message, None)
            if self.stream is not None and text.strip() and text != self.streamed:
                self.streamed = text
                self.chunk(text, done=False)
        elif event.phase == "voting":
            self._send_report(f"voting among {event.finished} of {event.voters} answers", None)

    def on_index(self, event: IndexProgress) -> None:
        """The indexer's progress callback (called from the indexing thread)."""
        now = time.monotonic()
        if event.phase in ("parse", "embed") and now - self._last_report < REPORT_INTERVAL_S:
            return
        self._last_report = now
        # Percentages must not go down: only parsing has one (embedding, after it, counts anew).
        percentage = int(100 * event.done / event.total) if event.phase == "parse" and event.total else None
        if event.phase == "scan":
            message = f"{event.total} files to parse"
        elif event.phase == "parse":
            message = f"parsed {event.done}/{event.total} files, {event.chunks} chunks"
        elif event.phase == "embed":
            message = f"embedded {event.done}/{event.total} chunks"
        else:
            message = f"{event.done} files, {event.chunks} chunks"
        self.report(message, percentage)

    def chunk(self, text: str, *, done: bool) -> None:
        """One ``swarm/chatChunk``: the answer so far (voter 0's while voting is pending), or the
        voted answer with ``done: true``."""
        if self.stream is None:
            return
        self.server.protocol.notify(CHAT_CHUNK, {**self.stream, "text": text, "done": done})

    def end(self, message: str) -> None:
        """Call on the event loop."""
        if self._ended:
            return
        self._ended = True
        if self.token is not None:
            self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self.server.work_done_progress.tokens.pop(self.token, None)


def _client_supports_progress(server: LanguageServer) -> bool:
    window = server.client_capabilities.window
    return bool(window is not None and window.work_done_progress)
