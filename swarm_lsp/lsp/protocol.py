"""pygls' protocol with four changes.

- A request whose params do not match the spec (``"range": "nonsense"``) is answered with an
  InvalidParams error naming the bad fields. pygls 2.1 raises while decoding such a message and
  only logs it, so the client would wait forever. A notification with bad params is reported in
  the log; a malformed response from the client fails the request that was waiting for it.
- A body that is not a JSON-RPC 2.0 message is answered as JSON-RPC says, where pygls only logs
  it: invalid JSON with a ParseError, anything else (a batch, a bare value, a request without
  ``"jsonrpc": "2.0"`` or with an id that is neither a string nor a number) with InvalidRequest,
  under the message's id when it has a usable one, else id null. LSP has no batches.
- ``$/cancelRequest`` also cancels the job's `CancellationToken`. pygls cancels the handler's
  future, which for ``workspace/executeCommand`` is only the wrapper around the command, so the
  model would go on decoding.
- Buffers are tracked once, by the server's `Documents` (see documents.py), not also by pygls'
  own workspace, which would split lines differently and redo the work on every keystroke.
"""

from __future__ import annotations

import contextvars
import logging
from typing import TYPE_CHECKING, Any

import cattrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol, lsp_method

if TYPE_CHECKING:
    from collections.abc import Generator

log = logging.getLogger(__name__)


current_command: contextvars.ContextVar[types.ExecuteCommandParams | None] = contextvars.ContextVar(
    "current_command", default=None
)
"""The executeCommand params of the command running in this context (pygls passes a command
handler only its arguments; the work-done token is in the params)."""


class _Answered:
    """A decoded message that was already answered (with an error) and must not be handled."""


ANSWERED = _Answered()


def usable_id(value: Any) -> bool:
    """JSON-RPC ids are strings or numbers (integers, as LSP says); anything else cannot be answered."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class SwarmProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]) -> Any:
        if "jsonrpc" in data and "method" in data and "id" in data and not usable_id(data["id"]):
            self.refuse_message(f"the id must be a string or an integer, got {data['id']!r}", data)
            return ANSWERED
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            return self._refuse(data, error)

    def refuse_message(
        self, reason: str, message: Any = None, error: type[JsonRpcException] = JsonRpcInvalidRequest
    ) -> None:
        """Answer a body that is not a JSON-RPC 2.0 message with `error`: under its id when it has a
        usable one, else with id null, as JSON-RPC asks. One shaped as a notification is only logged."""
        log.warning("invalid message: %s", reason)
        if isinstance(message, dict):
            msg_id, notification = message.get("id"), "id" not in message and "method" in message
        else:
            msg_id, notification = (
                getattr(message, "id", None),
                hasattr(message, "method") and not hasattr(message, "id"),
            )
        if notification:
            return
        self._send_data(
            {
                "jsonrpc": "2.0",
                "id": msg_id if usable_id(msg_id) else None,
                "error": {"code": error.CODE, "message": f"{error.MESSAGE}: {reason}"},
            }
        )

    def _refuse(self, data: dict[str, Any], error: JsonRpcException) -> _Answered:
        method = data.get("method")
        problems = _describe(error.__cause__) or error.message
        message = f"invalid params for {method}: {problems}" if method else f"invalid message: {problems}"
        if "id" in data and method:
            self._send_response(data["id"], error=JsonRpcInvalidParams(message).to_response_error())
        elif "id" in data:
            self._handle_response(data["id"], None, JsonRpcInvalidParams(message).to_response_error())
        else:
            self._server.window_log_message(
                types.LogMessageParams(type=types.MessageType.Warning, message=f"ignored: {message}")
            )
        log.warning("%s", message)
        return ANSWERED

    def handle_message(self, message: Any) -> None:
        if message is ANSWERED:
            return
        if isinstance(message, list):
            self.refuse_message("a batch (a JSON array); LSP sends one message at a time", message)
        elif not hasattr(message, "jsonrpc"):
            self.refuse_message(f"not a JSON-RPC message: {_shorten(message)}", message)
        elif message.jsonrpc != self.VERSION:
            self.refuse_message(f'"jsonrpc" must be "2.0", got {message.jsonrpc!r}', message)
        else:
            super().handle_message(message)

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        if not usable_id(msg_id):  # no request has it: nothing to cancel
            log.warning("ignored $/cancelRequest for the id %s", _shorten(msg_id))
            return
        self._server.jobs.cancel_request(msg_id)  # type: ignore[attr-defined]
        super()._handle_cancel_notification(msg_id)

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams) -> Generator:
        current_command.set(params)
        return (yield from super().lsp_workspace__execute_command(params))

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Generator:
        yield self.fm.features[types.TEXT_DOCUMENT_DID_OPEN], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Generator:
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CHANGE], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Generator:
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CLOSE], (params,), None


def _shorten(value: Any, limit: int = 120) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _describe(cause: BaseException | None) -> str:
    if cause is None:
        return ""
    try:
        return "; ".join(cattrs.transform_error(cause))
    except Exception:
        return str(cause)
