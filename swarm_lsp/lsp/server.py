"""The language server's handlers: each one translates LSP into the session and the core and back.

What every handler shares (progress, cancellation, showing answers, applying edits, settings)
is in service.py; what an action means is the core's `Task`; positions are documents.py's.
Protocol reference for clients: docs/lsp.md.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from swarm_lsp.lsp import actions
from swarm_lsp.lsp.protocol import current_command
from swarm_lsp.lsp.service import SwarmServer, answers_errors


def create_server() -> SwarmServer:
    server = SwarmServer()

    # ---------------------------------------------------------------- lifecycle

    @server.feature(types.INITIALIZE)
    def initialize(ls: SwarmServer, params: types.InitializeParams) -> None:
        try:
            ls.start_session(params)
        except ValueError as error:
            raise JsonRpcInvalidParams(str(error)) from None

    @server.feature(types.INITIALIZED)
    async def initialized(ls: SwarmServer, params: types.InitializedParams) -> None:
        await ls.finish_starting()

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: SwarmServer, params: None) -> None:
        await ls.stop()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def configuration_changed(ls: SwarmServer, params: types.DidChangeConfigurationParams) -> None:
        await ls.load_configuration(params.settings)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def folders_changed(ls: SwarmServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        for removed in params.event.removed:
            await ls.session.remove_folder(ls.session.folder_for(removed.uri).root)
        for added in params.event.added:
            for uri, root in ls.session.folder_paths([added.uri]):
                folder = ls.add_folder(uri, root)
                if folder is not None and folder.indexes_itself:
                    ls.spawn(ls.index_folder(folder))

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def progress_cancelled(ls: SwarmServer, params: types.WorkDoneProgressCancelParams) -> None:
        ls.jobs.cancel_progress(params.token)

    # ------------------------------------------------------------------ buffers

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def opened(ls: SwarmServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.session.documents.open(params.text_document)
        ls.buffer_opened(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def changed(ls: SwarmServer, params: types.DidChangeTextDocumentParams) -> None:
        document = ls.session.documents.change(params)
        ls.buffer_changed(document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def closed(ls: SwarmServer, params: types.DidCloseTextDocumentParams) -> None:
        document = ls.session.documents.close(params.text_document.uri)
        ls.buffer_closed(params.text_document.uri, document is not None and document.changed)

    # ------------------------------------------------------------- code actions

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=actions.ACTION_KINDS, resolve_provider=True),
    )
    def code_actions(ls: SwarmServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        document = ls.session.documents.find(params.text_document.uri)
        version = document.version if document is not None else None
        return actions.list_actions(params, resolve=ls.resolves_edits, version=version)

    @server.feature(types.CODE_ACTION_RESOLVE)
    @answers_errors
    async def resolve_code_action(ls: SwarmServer, action: types.CodeAction) -> types.CodeAction:
        if action.data is None:  # an action that carries a command: nothing to resolve
            return action
        request = actions.resolve_request(action.data)
        if request.kind in actions.NEEDS_INPUT:
            return actions.command_action(action)
        return await ls.resolve(action, request)

    # -------------------------------------------------------------- inline completion

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    @answers_errors
    async def inline_completion(
        ls: SwarmServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList | None:
        return await ls.inline.answer(
            ls.session, params, lambda message: ls.tell(message, types.MessageType.Warning)
        )

    # ----------------------------------------------------------------- commands

    # The task commands: each parses its arguments into a core request and runs it.
    for name in (actions.EXPLAIN, actions.REFACTOR, actions.DOCUMENT, actions.FIX, actions.ASK, actions.CHAT):
        server.command(name)(answers_errors(_task_command(name)))

    @server.command(actions.EXPLAIN_CODEBASE)
    @answers_errors
    async def explain_codebase(ls: SwarmServer, *arguments: Any) -> dict[str, Any]:
        return await ls.answer(actions.explain_codebase_request(arguments))

    @server.command(actions.REFACTOR_CODEBASE)
    @answers_errors
    async def refactor_codebase(ls: SwarmServer, *arguments: Any) -> dict[str, Any]:
        request = actions.parse_codebase_request(actions.REFACTOR_CODEBASE, arguments)
        folder = ls.session.default_folder(request.folder_uri)
        return await ls.refactor_codebase(
            folder,
            request.instruction,
            request.max_targets,
            request.voters,
            max_references=request.max_references,
            token=_work_done_token(),
            request_id=ls.protocol.msg_id,
        )

    @server.command(actions.REINDEX)
    @answers_errors
    async def reindex(ls: SwarmServer, *arguments: Any) -> dict[str, Any]:
        request = actions.parse_codebase_request(actions.REINDEX, arguments)
        folder = ls.session.default_folder(request.folder_uri)
        report = await ls.index_folder(folder, _work_done_token(), ls.protocol.msg_id)
        return {
            "root": str(folder.root),
            "parsed": report.parsed,
            "unchanged": report.unchanged,
            "deleted": report.deleted,
            "chunksWritten": report.chunks_written,
            "embedded": report.embedded,
            "skipped": [{"path": item.path, "reason": item.reason} for item in report.skipped],
        }

    @server.command(actions.STATUS)
    @answers_errors
    async def status(ls: SwarmServer, *arguments: Any) -> dict[str, Any]:
        request = actions.parse_codebase_request(actions.STATUS, arguments)
        return await ls.status(request.folder_uri)

    return server


def _work_done_token() -> types.ProgressToken | None:
    params = current_command.get()
    return params.work_done_token if params is not None else None


def _task_command(name: str):
    """The handler of task command `name` (pygls reads its signature: keep it `(ls, *arguments)`)."""

    async def run_task(ls: SwarmServer, *arguments: Any) -> dict[str, Any]:
        return await ls.answer(actions.parse_request(name, arguments))

    run_task.__name__ = name.replace(".", "_")
    return run_task
