"""GET /api/events: the dashboard's live feed, as server-sent events.

`request` events carry a request record whenever one starts, moves on (a few times a second) or
ends; `status` events the server status about once a second; `tools` events say the audit log
grew (by how many bytes). Comment lines keep the connection open through proxies. A slow reader
loses request updates, never the server's time: the feed's queue is bounded and the oldest updates
give way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from swarm_lsp.api.dashboard import shared_status
from swarm_lsp.api.state import ApiState

STATUS_EVERY_S = 1.0
KEEPALIVE_EVERY_S = 15.0
QUEUED_UPDATES = 256


async def events(request: Request) -> Response:
    return StreamingResponse(
        _feed(request.app.state.api),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _feed(state: ApiState) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUED_UPDATES)

    def enqueue(record: dict[str, Any]) -> None:
        if updates.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                updates.get_nowait()
        updates.put_nowait(record)

    def on_record(record: dict[str, Any]) -> None:  # called on the decoding thread
        loop.call_soon_threadsafe(enqueue, record)

    unsubscribe = state.workspace.activity.subscribe(on_record)
    audit_size = _size(state)
    last_status = last_sent = 0.0
    try:
        yield ": swarm-lsp events\n\n"
        while True:
            now = loop.time()
            if now - last_status >= STATUS_EVERY_S:
                last_status = last_sent = now
                yield _event("status", await shared_status(state, STATUS_EVERY_S / 2))
                size = _size(state)
                if size != audit_size:
                    grew, audit_size = size - audit_size, size
                    yield _event("tools", {"bytes": grew})
            elif now - last_sent >= KEEPALIVE_EVERY_S:
                last_sent = now
                yield ": ping\n\n"
            try:
                record = await asyncio.wait_for(updates.get(), timeout=STATUS_EVERY_S / 2)
            except asyncio.TimeoutError:
                continue
            last_sent = loop.time()
            yield _event("request", record)
    finally:
        unsubscribe()


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


def _size(state: ApiState) -> int:
    try:
        return state.audit_file.stat().st_size
    except OSError:
        return 0
