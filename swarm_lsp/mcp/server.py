"""The MCP front door: adapts the tool registry to the `mcp` SDK, over stdio or streamable HTTP.

Nothing here decides anything: tools, tiers, policy, sandbox, approval, cache and audit live in
`swarm_lsp.tools`. This module only translates:

- `tools/list` -> the registry's tools, with annotations derived from their tiers;
- `tools/call` -> `Registry.call` with a `Caller` describing the client: its name, its roots
  (when it offers them), progress notifications, and an approver that asks the user through MCP
  elicitation. Clients on the handshake protocols (2024-11-05 ... 2025-11-25) are asked with an
  `elicitation/create` request; on 2026-07-28, where servers send no requests, the call returns
  `input_required` with the same question, and the client calls again with the answer (the
  request state is sealed and bound to the tool and its arguments by the SDK). Where there is a
  session to remember it in (stdio: the process; HTTP on the handshake protocols: the
  `Mcp-Session-Id` session) the question also offers "allow for this session"; stateless 2026-07-28
  HTTP has no session, so there every call is asked;
- resources: the index status and the repo map, read through the same registry (so audited);
- HTTP: loopback by default; any other bind address needs a token, checked on every request.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from swarm_lsp import __version__
from swarm_lsp.sockets import is_loopback, serve_asgi, url_host
from swarm_lsp.tools.registry import (
    ApprovalAnswer,
    ApprovalDeferred,
    ApprovalRequest,
    Caller,
    Output,
    Refused,
    SessionAllowance,
)
from swarm_lsp.tools.toolbox import Toolbox

log = logging.getLogger(__name__)

DEFAULT_TOOL_PORT = 17616
SERVER_NAME = "swarm-lsp"
INSTRUCTIONS = (
    "Workspace tools for one code repository: read and search the code (search_code, find_symbol, "
    "get_outline, repo_map, read_file, list_dir), ask local model voters about it (ask_swarm, "
    "explain_code, propose_refactor), and, with the user's approval, change files (write_file, "
    "edit_file, apply_patch, delete_file) or run commands (run_command). Paths are relative to the "
    "workspace root."
)
APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approve": {
            "type": "boolean",
            "title": "Run it",
            "description": "true runs this call once; false refuses it",
        }
    },
    "required": ["approve"],
}
SESSION_FIELD = "allow_for_session"
"""Added to APPROVAL_SCHEMA when the call may be allowed for the session; optional, so a client
that answers only `approve` gets what it always got: this call, once."""
RESOURCES = {
    "swarm-lsp://index/status": ("index_status", "application/json", "Index status"),
    "swarm-lsp://repo-map": ("repo_map", "text/plain", "Repository map"),
}
_USED_APPROVALS_KEPT = 4096
_HTTP_SESSIONS_KEPT = 256


class SessionAllowances:
    """The `SessionAllowance` of each client session this server serves, in memory only.

    stdio (and the in-process transport of the tests) serves one client per server: one allowance,
    gone when the process exits. HTTP on the handshake protocols: one per `Mcp-Session-Id`, which the
    SDK has checked belongs to this connection; the least recently used are forgotten past
    `_HTTP_SESSIONS_KEPT` (that only means asking again). 2026-07-28 HTTP is stateless: no session, so
    none.
    """

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self._process = SessionAllowance()
        self._http: OrderedDict[str, SessionAllowance] = OrderedDict()

    def of(self, ctx: Any, modern: bool) -> SessionAllowance | None:
        if self.transport != "http":
            return self._process
        if modern:
            return None
        headers = getattr(ctx.request, "headers", None)
        session_id = headers.get("mcp-session-id") if headers is not None else None
        if not session_id:
            return None
        allowance = self._http.pop(session_id, None) or SessionAllowance()
        self._http[session_id] = allowance
        while len(self._http) > _HTTP_SESSIONS_KEPT:
            self._http.popitem(last=False)
        return allowance


def build_server(toolbox: Toolbox, *, transport: str) -> Server:
    """A lowlevel MCP `Server` serving `toolbox` (transport names the client in the audit log)."""
    registry = toolbox.registry
    used_approvals: deque[str] = deque(maxlen=_USED_APPROVALS_KEPT)
    sessions = SessionAllowances(transport)

    def to_mcp(tool: Any) -> types.Tool:
        hints = tool.annotations
        return types.Tool(
            name=tool.name,
            title=tool.title or None,
            description=tool.description,
            input_schema=tool.input_schema,
            annotations=types.ToolAnnotations(
                title=tool.title or None,
                read_only_hint=hints.read_only,
                destructive_hint=hints.destructive,
                idempotent_hint=hints.idempotent,
                open_world_hint=hints.open_world,
            ),
        )

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[to_mcp(tool) for tool in registry.tools()])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
        caller = await _caller(ctx, transport, params, used_approvals, sessions)
        try:
            output = await registry.call(params.name, params.arguments, caller)
        except ApprovalDeferred as deferred:
            return deferred.payload
        return _result(output)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        if registry.get("index_status") is None:
            return types.ListResourcesResult(resources=[])
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=uri, name=tool, title=title, mime_type=mime)
                for uri, (tool, mime, title) in RESOURCES.items()
            ]
        )

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        entry = RESOURCES.get(str(params.uri))
        if entry is None:
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"unknown resource {params.uri}; known: {', '.join(RESOURCES)}",
            )
        tool, mime, _title = entry
        caller = await _caller(ctx, transport, None, used_approvals, sessions)
        output = await registry.call(tool, {}, caller)
        if output.is_error:
            raise MCPError(code=types.INTERNAL_ERROR, message=output.text)
        text = json.dumps(output.data, indent=2) if mime == "application/json" else encodable(output.text)
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=str(params.uri), mime_type=mime, text=text)]
        )

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = registry.get(name)
        return None if tool is None else tool.input_schema

    server = Server(
        SERVER_NAME,
        version=__version__,
        title="swarm-lsp workspace tools",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )
    # 2026-07-28 approvals round-trip through the client: seal the state so it cannot be forged.
    server.middleware.append(
        RequestStateBoundary(RequestStateSecurity.ephemeral(), default_audience=SERVER_NAME)
    )
    return server


def _result(output: Output) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=encodable(output.text))],
        structured_content=encodable(output.data),
        is_error=output.is_error,
    )


def encodable(value: Any) -> Any:
    """`value` with every lone surrogate written as its escape (a file name that is not UTF-8 comes
    back from the file system with one): the transports encode UTF-8, and one such character would
    fail the whole response (on stdio, the server with it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {encodable(key): encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [encodable(item) for item in value]
    return value


# ------------------------------------------------------------------------------------------ caller


async def _caller(
    ctx: Any,
    transport: str,
    params: types.CallToolRequestParams | None,
    used: deque[str],
    sessions: SessionAllowances,
) -> Caller:
    session = ctx.session
    client_params = session.client_params
    info = client_params.client_info if client_params is not None else None
    name = f"{info.name} {info.version}".strip() if info is not None else "unknown client"
    client = f"{name} ({transport})"
    capabilities = session.client_capabilities
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
    approver: Callable[[ApprovalRequest], Awaitable[ApprovalAnswer]] | None = None
    if params is not None and _can_elicit(capabilities):
        approver = _input_required_approver(params, used) if modern else _elicitation_approver(ctx)
    roots = None
    if not modern and capabilities is not None and capabilities.roots is not None:
        roots = await _client_roots(ctx)

    async def progress(done: float, total: float | None, message: str | None) -> None:
        try:
            await session.report_progress(done, total, message)
        except Exception:  # progress is advisory; a client that went away must not fail the call
            log.debug("progress notification not delivered", exc_info=True)

    return Caller(
        client=client,
        approver=approver,
        no_approver_reason=f"{name} does not support MCP elicitation, so it cannot ask you",
        roots=roots,
        progress=progress,
        session=sessions.of(ctx, modern),
    )


def _can_elicit(capabilities: types.ClientCapabilities | None) -> bool:
    if capabilities is None or capabilities.elicitation is None:
        return False
    elicitation = capabilities.elicitation
    # An empty elicitation capability means form mode (the 2025-06-18 shape).
    return elicitation.form is not None or elicitation.url is None


def approval_schema(request: ApprovalRequest) -> dict[str, Any]:
    """APPROVAL_SCHEMA, with the "for this session" checkbox when the call may be allowed so."""
    if not request.session_choice:
        return APPROVAL_SCHEMA
    checkbox = {
        "type": "boolean",
        "title": "Don't ask again this session",
        "description": f"with Run it checked, also run {request.session_scope} without asking "
        "until this session ends (destructive calls are always asked)",
        "default": False,
    }
    return {**APPROVAL_SCHEMA, "properties": {**APPROVAL_SCHEMA["properties"], SESSION_FIELD: checkbox}}


def _answer(result: types.ElicitResult, request: ApprovalRequest) -> ApprovalAnswer:
    if result.action != "accept":
        return result.action
    content = result.content or {}
    if content.get("approve") is not True:
        return "decline"
    if request.session_choice and content.get(SESSION_FIELD) is True:
        return "accept_for_session"
    return "accept"


def _elicitation_approver(ctx: Any) -> Callable[[ApprovalRequest], Awaitable[ApprovalAnswer]]:
    async def approve(request: ApprovalRequest) -> ApprovalAnswer:
        try:
            result = await ctx.session.elicit_form(
                message=request.message,
                requested_schema=approval_schema(request),
                related_request_id=ctx.request_id,
            )
        except MCPError as error:
            raise Refused(
                f"{request.tool} needs your approval, but asking failed: {error}", decided_by="client"
            ) from None
        return _answer(result, request)

    return approve


def _input_required_approver(
    params: types.CallToolRequestParams, used: deque[str]
) -> Callable[[ApprovalRequest], Awaitable[ApprovalAnswer]]:
    async def approve(request: ApprovalRequest) -> ApprovalAnswer:
        key, fingerprint = _pending(params.request_state)
        response = (params.input_responses or {}).get(key) if key else None
        if key is not None and isinstance(response, types.ElicitResult):
            if key in used:
                raise Refused(
                    f"this approval of {request.tool} was already used; call again", decided_by="client"
                )
            used.append(key)
            if fingerprint != request.fingerprint:
                raise Refused(
                    f"{request.tool} was not run: the files it works on changed while you were deciding, so "
                    "your answer was for a different change. Call it again to see the change as it is now.",
                    decided_by="approval",
                )
            return _answer(response, request)
        key = f"approve-{secrets.token_hex(12)}"
        ask = types.ElicitRequest(
            params=types.ElicitRequestFormParams(
                message=request.message, requested_schema=approval_schema(request)
            )
        )
        state = json.dumps({"approval": key, "fingerprint": request.fingerprint})
        raise ApprovalDeferred(types.InputRequiredResult(input_requests={key: ask}, request_state=state))

    return approve


def _pending(state: str | None) -> tuple[str | None, str | None]:
    """The approval key and fingerprint in a request state this server minted (the SDK has
    verified its seal, its expiry and that it belongs to this tool and these arguments)."""
    if not state:
        return None, None
    try:
        record = json.loads(state)
        key, fingerprint = record.get("approval"), record.get("fingerprint")
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(key, str) or not isinstance(fingerprint, str):
        return None, None
    return key, fingerprint


async def _client_roots(ctx: Any) -> tuple[Path, ...] | None:
    try:
        result = await ctx.session.send_request(
            types.ListRootsRequest(),
            types.ListRootsResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
    except (MCPError, OSError) as error:
        log.warning("the client declared roots but listing them failed (%s); using the workspace", error)
        return None
    roots = []
    for root in result.roots:
        parsed = urlparse(str(root.uri))
        path = Path(unquote(parsed.path))
        if parsed.scheme == "file" and path.is_dir():
            roots.append(path)
    return tuple(roots) or None


# ------------------------------------------------------------------------------------------- stdio


async def serve_stdio(toolbox: Toolbox) -> None:
    server = build_server(toolbox, transport="stdio")
    async with anyio.create_task_group() as group:
        group.start_soon(_index_in_background, toolbox)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
        group.cancel_scope.cancel()


async def _index_in_background(toolbox: Toolbox) -> None:
    try:
        await toolbox.ensure_index()
    except Exception:  # the index tools report it when called; the server keeps serving the others
        log.exception("the first index sync failed")


# -------------------------------------------------------------------------------------------- http


class TokenGuard:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": "unauthorized",
                "error_description": "send Authorization: Bearer <the server's --token>",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="swarm-lsp"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def http_app(toolbox: Toolbox, *, host: str, token: str | None) -> Any:
    """The streamable HTTP app at /mcp; wrapped in the token check when a token is given."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"binding {host} exposes the workspace tools beyond this machine; pass --token (or "
            "--token-file) so every request must carry Authorization: Bearer <token>"
        )
    server = build_server(toolbox, transport="http")
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    return TokenGuard(app, token) if token else app


async def serve_http(
    toolbox: Toolbox,
    *,
    host: str,
    port: int,
    token: str | None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; `on_ready` gets the URL once the socket listens (port 0 picks one)."""
    shown_host = url_host(host)
    await serve_asgi(
        lambda _port: http_app(toolbox, host=host, token=token),
        host,
        port,
        background=[lambda: _index_in_background(toolbox)],
        on_ready=None if on_ready is None else lambda actual: on_ready(f"http://{shown_host}:{actual}/mcp"),
        lifespan="on",
    )
