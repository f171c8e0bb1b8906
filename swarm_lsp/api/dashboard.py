"""The dashboard's JSON endpoints and its page (docs/api.md, "Dashboard").

GET /api/status, /api/requests, /api/tools, /api/settings, /api/doctor; POST /api/settings.
The page itself (static/index.html and its assets) is served from the package: no CDN, offline.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from swarm_lsp import __version__
from swarm_lsp.api.errors import ApiError
from swarm_lsp.api.listings import doctor_report
from swarm_lsp.api.schema import read_json
from swarm_lsp.api.state import ApiState
from swarm_lsp.config import WORKSPACE_FILE
from swarm_lsp.config_edit import SettingRefused, describe_settings, set_workspace_setting
from swarm_lsp.tools.audit import read_audit

STATIC = Path(__file__).parent / "static"
TIERS = ("read", "write", "execute", "destructive")
OUTCOMES = ("ok", "error", "denied")
MAX_TOOL_ROWS = 1000


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def status(request: Request) -> Response:
    return JSONResponse(await server_status(request.app.state.api))


async def server_status(state: ApiState) -> dict[str, Any]:
    """Workspace, model, voters busy and free, queue, index: what the dashboard and peers read."""
    workspace = state.workspace
    model = workspace.model_info() | {"error": state.model_error}
    busy = sum(record.voters for record in workspace.activity.running())
    total = model.get("voters") or 0
    index = state.upkeep.describe() | {"watching": False}
    try:
        counts = (await asyncio.to_thread(workspace.status)).to_dict()
    except Exception as error:  # the index may be mid-rebuild; the rest of the status still holds
        index["error"] = index["error"] or f"index status unavailable: {error}"
    else:
        for key in (
            "files",
            "chunks",
            "symbols",
            "embedder",
            "embedder_note",
            "chunks_with_vectors",
            "embedding_backlog",
            "updated_at",
            "disk_bytes",
            "watching",
            "location",
        ):
            index[key] = counts[key]
    return {
        "version": __version__,
        "workspace": str(workspace.root),
        "started_at": state.started_at,
        "uptime_s": round(time.time() - state.started_at, 1),
        "model": model,
        "voters": {"total": total, "busy": busy, "free": max(0, total - busy)},
        "queue": {
            "running": workspace.queue.running,
            "waiting": workspace.queue.waiting,
            "limit": workspace.queue.limit,
        },
        "index": index,
    }


async def shared_status(state: ApiState, max_age_s: float) -> dict[str, Any]:
    """The status for the event feeds: made at most once per `max_age_s` however many pages are
    open (each one would otherwise read the index's counts every second)."""
    loop = asyncio.get_running_loop()
    if state.status is None or loop.time() - state.status[0] >= max_age_s:
        state.status = (loop.time(), await server_status(state))
    return state.status[1]


async def requests(request: Request) -> Response:
    state: ApiState = request.app.state.api
    return JSONResponse({"requests": state.workspace.activity.snapshot()})


async def doctor(request: Request) -> Response:
    return JSONResponse(await doctor_report(request.app.state.api, max_age_s=5.0))


# ------------------------------------------------------------------------------------- tool log


async def tools(request: Request) -> Response:
    """The MCP audit log, newest first, filtered by tool, tier, outcome and time."""
    state: ApiState = request.app.state.api
    query = request.query_params
    since = _since(query.get("since", ""))
    try:
        limit = max(1, min(MAX_TOOL_ROWS, int(query.get("limit", "200"))))
    except ValueError:
        raise ApiError(400, "limit must be a whole number", param="limit") from None
    entries = await asyncio.to_thread(lambda: list(read_audit(state.audit_file)))
    names = sorted({str(entry.get("tool")) for entry in entries if entry.get("tool")})
    chosen = []
    for entry in reversed(entries):
        entry["outcome"] = outcome(entry)
        if query.get("tool") and entry.get("tool") != query["tool"]:
            continue
        if query.get("tier") and entry.get("tier") != query["tier"]:
            continue
        if query.get("outcome") and entry["outcome"] != query["outcome"]:
            continue
        if since is not None and _time_of(entry) < since:
            continue
        chosen.append(entry)
        if len(chosen) >= limit:
            break
    return JSONResponse(
        {
            "path": str(state.audit_file),
            "tools": names,
            "tiers": TIERS,
            "outcomes": OUTCOMES,
            "entries": chosen,
        }
    )


def outcome(entry: dict[str, Any]) -> str:
    if entry.get("decision") == "deny":
        return "denied"
    return "error" if entry.get("error") else "ok"


def _since(value: str) -> float | None:
    """A time filter: seconds ago ("600") or an ISO time; None without one."""
    if not value:
        return None
    try:
        return time.time() - float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "since takes seconds ago (600) or an ISO time", param="since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _time_of(entry: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(entry.get("time", "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------- settings


async def settings(request: Request) -> Response:
    state: ApiState = request.app.state.api
    return JSONResponse(
        {
            "file": str(state.workspace.root / WORKSPACE_FILE),
            "settings": describe_settings(state.workspace.loaded),
        }
    )


async def change_setting(request: Request) -> Response:
    """Set one key in the workspace's .swarm-lsp.toml; an invalid value is refused, nothing written."""
    state: ApiState = request.app.state.api
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("key"), str) or "value" not in body:
        raise ApiError(400, 'send {"key": "section.name", "value": ...}', param="key")
    key = body["key"]
    try:
        written = await asyncio.to_thread(set_workspace_setting, state.workspace.root, key, body["value"])
    except SettingRefused as error:
        raise ApiError(400, str(error), param=error.key, code="invalid_setting") from None
    state.workspace.reload_settings()
    return JSONResponse(
        {
            "ok": True,
            "key": written.key,
            "value": written.value,
            "written": written.written,
            "file": str(written.file),
            "applies": written.applies,
            "warning": written.warning,
        }
    )
