"""The language server object: the session, the running jobs, and the steps every handler shares.

`server.py` lists the handlers; each is a few lines that call these steps: run a request through
the core with progress and cancellation, show an answer, apply an edit, index a folder, load
settings. Nothing here decides what an action means (that is the core's `Task`) or how a position
is counted (that is documents.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.exceptions import (
    JsonRpcContentModified,
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcParseError,
    JsonRpcRequestCancelled,
)
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path

from swarm_lsp import __version__
from swarm_lsp.basics import SwarmLspError
from swarm_lsp.codebase import Target as CodebaseTarget
from swarm_lsp.codebase import explain_codebase_task, refactor_codebase
from swarm_lsp.config import ConfigError
from swarm_lsp.lsp import render
from swarm_lsp.lsp.actions import ContentModified, Request, build_task
from swarm_lsp.lsp.inline import InlineCompletions
from swarm_lsp.lsp.progress import Job, Jobs, Progress
from swarm_lsp.lsp.protocol import SwarmProtocol, current_command
from swarm_lsp.lsp.session import CONFIG_SECTION, Folder, Session, Target, merge_options
from swarm_lsp.swarm.engine import Cancelled
from swarm_lsp.swarm.runner import SwarmResult
from swarm_lsp.swarm.tasks import CODE_KINDS, Edit, Task
from swarm_lsp.workspace import SyncReport, Workspace

log = logging.getLogger(__name__)

BUFFER_INDEX_DELAY_S = 0.5
"""An edited buffer is indexed this long after the last keystroke."""
DRAIN_TIMEOUT_S = 30.0
"""How long a settings change waits for cancelled requests to stop before replacing a Workspace."""
REFACTOR_PRESETS = (
    "Simplify this code",
    "Improve the names",
    "Add type annotations",
    "Make it more idiomatic",
)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


@dataclass
class Run:
    """A finished request: the core's result, the task it ran, and where it pointed."""

    result: SwarmResult
    task: Task
    target: Target | None
    folder: Folder
    where: dict[str, Any] | None
    """The target in the client's units when the request started (see `render.target_json`)."""


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: the request was valid but could not be carried out."""

    CODE = -32803
    MESSAGE = "Request failed"


def answers_errors(handler: Handler) -> Handler:
    """Turn the core's errors into JSON-RPC errors with the core's message; the server goes on."""

    @functools.wraps(handler)
    async def wrapped(ls: SwarmServer, *args: Any) -> Any:
        try:
            return await handler(ls, *args)
        except JsonRpcException:
            raise
        except Cancelled:
            if ls.jobs.answered_by_cancel(ls.protocol.msg_id):
                return None  # pygls answered the $/cancelRequest; an error now would go nowhere
            raise JsonRpcRequestCancelled("cancelled") from None
        except ContentModified as error:
            raise JsonRpcContentModified(str(error)) from None
        except ValueError as error:
            raise JsonRpcInvalidParams(str(error)) from None
        except (SwarmLspError, OSError) as error:
            ls.tell(f"swarm-lsp: {error}", types.MessageType.Error)
            raise RequestFailed(str(error)) from None

    return wrapped  # type: ignore[return-value]


class SwarmServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(
            "swarm-lsp",
            __version__,
            protocol_cls=SwarmProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.session = Session()
        self.jobs = Jobs()
        self.inline = InlineCompletions()
        self._buffer_timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._serving = False
        """Set once the first indexing started: from then on a new Workspace is indexed at once."""

    # ------------------------------------------------------------ capabilities

    def _client(self, dotted: str) -> Any:
        value: Any = self.client_capabilities
        for name in dotted.split("."):
            value = getattr(value, name, None)
            if value is None:
                return None
        return value

    @property
    def resolves_edits(self) -> bool:
        properties = self._client("text_document.code_action.resolve_support.properties") or []
        return "edit" in properties

    @property
    def shows_documents(self) -> bool:
        return bool(self._client("window.show_document.support"))

    @property
    def versioned_edits(self) -> bool:
        return bool(self._client("workspace.workspace_edit.document_changes"))

    @property
    def pulls_configuration(self) -> bool:
        return bool(self._client("workspace.configuration"))

    def tell(self, message: str, level: types.MessageType = types.MessageType.Info) -> None:
        self.window_show_message(types.ShowMessageParams(type=level, message=message))

    def report_server_error(self, error: Exception, source: Any) -> None:
        if source is JsonRpcException and isinstance(error, (ValueError, RecursionError)):
            # The message loop could not decode a body: JSON-RPC answers that with a ParseError.
            self.protocol.refuse_message(f"the body is not valid JSON ({error})", error=JsonRpcParseError)
            return
        super().report_server_error(error, source)

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        """Run in the background, keeping a reference; failures are logged."""
        future = asyncio.ensure_future(awaitable)
        self._background.add(future)

        def done(finished: asyncio.Future[Any]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background work failed", exc_info=finished.exception())

        future.add_done_callback(done)

    # ------------------------------------------------------------ lifecycle

    def start_session(self, params: types.InitializeParams) -> None:
        encoding = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
        self.session = Session(getattr(encoding, "value", encoding))
        options = params.initialization_options
        if options is not None and not isinstance(options, dict):
            raise ValueError(
                f"initializationOptions must be an object of settings, got {type(options).__name__}"
            )
        self.session.init_options = options or {}
        for uri, root in Session.folders_of(params):
            self.add_folder(uri, root)

    def add_folder(self, uri: str, root: Path) -> Folder | None:
        if not root.is_dir():
            log.warning("workspace folder %s is not a folder; skipped", root)
            return None
        try:
            return self.session.add_folder(uri, root)
        except ConfigError:
            return self.session.folders.get(root)

    async def finish_starting(self) -> None:
        """After initialize: settings from the client, then index every folder in the background."""
        if self.pulls_configuration:
            await self.load_configuration()
        for folder in self.session.folders.values():
            if folder.error:
                self.tell(f"swarm-lsp settings for {folder.root}:\n{folder.error}", types.MessageType.Error)
            if folder.indexes_itself:
                self.spawn(self.index_folder(folder))
        self._serving = True

    async def load_configuration(self, pushed: Any = None) -> None:
        """Re-read the editor's settings (pulled per folder, or as pushed) and apply what changed."""
        folders = list(self.session.folders.values())
        if isinstance(pushed, dict) and CONFIG_SECTION in pushed:
            values: list[Any] = [pushed[CONFIG_SECTION]] * len(folders)
        elif self.pulls_configuration and folders:
            items = [types.ConfigurationItem(scope_uri=f.uri, section=CONFIG_SECTION) for f in folders]
            try:
                values = await self.workspace_configuration_async(types.ConfigurationParams(items=items))
            except Exception as error:
                log.warning("workspace/configuration failed: %s", error)
                return
        else:
            return
        for folder, value in zip(folders, values, strict=False):
            if value is not None and not isinstance(value, dict):
                self.tell(
                    f"swarm-lsp: the '{CONFIG_SECTION}' settings must be an object, got {value!r}",
                    types.MessageType.Error,
                )
                continue
            await self.reconfigure(folder, value or {})

    async def reconfigure(self, folder: Folder, options: dict[str, Any]) -> None:
        try:
            opened, previous = self.session.configure(
                folder, merge_options(self.session.init_options, options)
            )
        except ConfigError as error:
            kept = "keeping the previous settings" if folder.workspace is not None else "nothing will run"
            self.tell(f"swarm-lsp settings for {folder.root} ({kept}):\n{error}", types.MessageType.Error)
            return
        if previous is not None:
            # Running requests used the old model and settings: stop them, then let the old one go.
            self.jobs.cancel_folder(str(folder.root))
            deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
            while self.jobs.running_in(str(folder.root)) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await previous.aclose()
        if opened and self._serving and folder.indexes_itself:
            self.spawn(self.index_folder(folder))

    async def stop(self) -> None:
        for timer in self._buffer_timers.values():
            timer.cancel()
        self._buffer_timers.clear()
        for folder in self.session.folders.values():
            self.jobs.cancel_folder(str(folder.root))
        await self.session.aclose()

    # -------------------------------------------------------------- buffers

    def buffer_opened(self, uri: str) -> None:
        """An opened file's chunks are embedded before the rest of the backlog."""
        found = self._workspace_of(uri)
        if found is not None:
            self.spawn(asyncio.to_thread(found[0].prioritise, [found[1]]))

    def buffer_changed(self, uri: str) -> None:
        """Index the buffer's unsaved text once the typing pauses."""
        timer = self._buffer_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._buffer_timers[uri] = loop.call_later(BUFFER_INDEX_DELAY_S, self._index_buffer, uri)

    def _index_buffer(self, uri: str) -> None:
        self._buffer_timers.pop(uri, None)
        document = self.session.documents.find(uri)
        if document is None:
            return
        found = self._workspace_of(uri)
        if found is not None:
            self.spawn(asyncio.to_thread(found[0].update_buffer, found[1], document.text))

    def buffer_closed(self, uri: str, changed: bool) -> None:
        """A closed buffer's unsaved text leaves the index: the file on disk is read again."""
        timer = self._buffer_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        found = self._workspace_of(uri) if changed else None
        if found is not None:
            self.spawn(asyncio.to_thread(found[0].sync_paths, [found[1]]))

    def _workspace_of(self, uri: str) -> tuple[Workspace, str] | None:
        """The workspace a document belongs to and its relative path; None outside the workspace
        folders, or where the folder has no usable settings (nothing to index then)."""
        try:
            folder, rel = self.session.locate(uri)
            return folder.require(), rel
        except ValueError:
            return None

    # ------------------------------------------------------------- indexing

    async def index_folder(
        self, folder: Folder, token: types.ProgressToken | None = None, request_id: Any = None
    ) -> SyncReport:
        workspace = folder.require()
        title = f"swarm-lsp: indexing {folder.root.name}"
        scanning = {"token": token, "request_id": request_id, "message": "scanning", "percentage": True}
        async with self.tracked(title, folder, **scanning) as (job, progress):
            report = await asyncio.to_thread(
                workspace.index, progress=progress.on_index, embed=True, cancel=job.cancel
            )
            if workspace.settings.index.watch:
                await asyncio.to_thread(workspace.start_watching)
        stopped = " (cancelled part-way; the next sync resumes)" if job.cancel.cancelled else ""
        progress.end(
            f"{report.parsed} files parsed, {report.unchanged} unchanged, {report.deleted} removed, "
            f"{report.embedded} chunks embedded{stopped}"
        )
        return report

    # ----------------------------------------------------------- swarm runs

    async def run(self, request: Request, *, token: types.ProgressToken | None, request_id: Any) -> Run:
        """One request through the core, with progress, streaming and cancellation."""
        target = self.session.target(request.uri) if request.uri else None
        folder = target.folder if target is not None else self.session.default_folder(request.folder_uri)
        workspace = folder.require()
        if request.codebase:
            task = await asyncio.to_thread(explain_codebase_task, workspace, request.prompt)
        else:
            task = build_task(request, target)
        task.validate()
        where = render.target_json(task, target)
        stream = None
        if task.kind not in CODE_KINDS:
            stream = {"kind": task.kind, "conversationId": task.conversation_id}
        title = f"swarm-lsp: {render.TITLES[task.kind]}"
        async with self.tracked(
            title, folder, token=token, request_id=request_id, message="retrieving context", stream=stream
        ) as (job, progress):
            result = await workspace.run(
                task,
                voters=request.voters,
                strategy=request.strategy,
                cancel=job.cancel,
                on_progress=progress.on_swarm,
            )
        progress.end(render.verdict(result.agreement, result.low_agreement))
        progress.chunk(result.answer, done=True)
        return Run(result, task, target, folder, where)

    async def answer(self, request: Request) -> dict[str, Any]:
        """A command: run it, then apply its edit or show its answer; returns the command result."""
        if request.needs_input:
            request.prompt = await self.ask_for_instruction()
        if request.kind == "chat" and not request.conversation_id:
            request.conversation_id = uuid.uuid4().hex[:12]
        params = current_command.get()
        token = params.work_done_token if params is not None else None
        run = await self.run(request, token=token, request_id=self.protocol.msg_id)
        if run.task.kind in CODE_KINDS:
            return await self.apply_result(run)
        return await self.show_answer(run)

    async def resolve(self, action: types.CodeAction, request: Request) -> types.CodeAction:
        """codeAction/resolve: run the action; an edit goes into the action, an answer is shown."""
        run = await self.run(request, token=None, request_id=self.protocol.msg_id)
        if run.task.kind not in CODE_KINDS:
            await self.show_answer(run)
            return action
        title = render.TITLES[run.task.kind]
        refused = ""
        try:
            action.edit = self.edit_for(run.result, run.folder)
        except render.StaleEdit as error:
            refused = str(error)
        message = render.edit_message(title, run.result, None, refused)
        low = run.result.low_agreement or action.edit is None
        self.tell(message, types.MessageType.Warning if low else types.MessageType.Info)
        return action

    async def status(self, folder_uri: str | None) -> dict[str, Any]:
        folders = [self.session.default_folder(folder_uri)] if folder_uri else self.session.folders.values()
        reports = []
        for folder in folders:
            entry: dict[str, Any] = {"root": str(folder.root), "error": folder.error or None}
            if folder.workspace is not None:
                settings = folder.workspace.settings
                entry["index"] = (await asyncio.to_thread(folder.workspace.status)).to_dict()
                entry["settings"] = {
                    "model": settings.model.name,
                    "voters": settings.swarm.voters,
                    "max_tokens": settings.swarm.max_tokens,
                    "strategy": settings.swarm.strategy,
                    "embedder": settings.index.embedder,
                }
                entry["modelLoaded"] = folder.workspace.model_loaded
            reports.append(entry)
        return {
            "version": __version__,
            "positionEncoding": self.session.encoding,
            "openDocuments": len(self.session.documents),
            "running": self.jobs.titles(),
            "inlineCompletion": self.inline.counts(),
            "folders": reports,
        }

    @contextlib.asynccontextmanager
    async def tracked(
        self,
        title: str,
        folder: Folder,
        *,
        token: types.ProgressToken | None,
        request_id: Any,
        message: str,
        stream: dict[str, Any] | None = None,
        percentage: bool = False,
    ) -> AsyncIterator[tuple[Job, Progress]]:
        """A cancellable job with its progress; the progress ends however the work ends."""
        job = self.jobs.start(title, request_id, str(folder.root))
        progress = await Progress.begin(
            self, title, token, stream=stream, message=message, job=job, percentage=percentage
        )
        try:
            yield job, progress
        except (Cancelled, asyncio.CancelledError):
            progress.end(f"cancelled after {progress.tokens} tokens")
            raise
        except BaseException as error:
            progress.end(f"stopped: {error}" if str(error) else "stopped")
            raise
        finally:
            self.jobs.finish(job)

    async def ask_for_instruction(self) -> str:
        """A refactor instruction picked by the user (for clients that cannot prompt for text)."""
        params = types.ShowMessageRequestParams(
            type=types.MessageType.Info,
            message="swarm-lsp: how should the selection be refactored?",
            actions=[types.MessageActionItem(title=title) for title in REFACTOR_PRESETS],
        )
        try:
            choice = await self.window_show_message_request_async(params)
        except JsonRpcException as error:
            raise ValueError(
                f"swarm.refactor needs an instruction (the client could not ask: {error})"
            ) from None
        if choice is None:
            raise JsonRpcRequestCancelled("no refactor instruction was chosen")
        return choice.title

    # ------------------------------------------------------------- results

    async def show_answer(self, run: Run) -> dict[str, Any]:
        """Show a text answer as a markdown document (or a message) and return the command result."""
        result, task, folder = run.result, run.task, run.folder
        title = render.answer_title(task)
        links = render.SourceLinks(folder.root, render.answers_dir(folder.require().data_dir))
        markdown = render.answer_markdown(title, result, links)
        name = render.answer_name(task.kind)
        append = False
        if task.kind == "chat" and task.conversation_id:
            name, append = f"chat-{task.conversation_id}", True
            markdown = f"## You\n\n{task.prompt.strip()}\n\n## swarm-lsp\n\n{result.answer.strip()}\n\n"
            markdown += render.footer(result, links) + "\n"
        shown = await self.show_markdown(folder, name, markdown, append=append)
        if shown is None:
            level = types.MessageType.Warning if result.low_agreement else types.MessageType.Info
            self.tell(markdown, level)
        return render.payload(
            result,
            markdown=markdown,
            document=shown,
            conversationId=task.conversation_id,
            target=run.where,
        )

    async def show_markdown(
        self, folder: Folder, name: str, markdown: str, *, append: bool = False
    ) -> str | None:
        """Write an answer document and show it with window/showDocument; its URI, or None when the
        client cannot show documents or did not."""
        if not self.shows_documents:
            return None
        answers = render.answers_dir(folder.require().data_dir)
        path = await asyncio.to_thread(render.write_answer, answers, name, markdown, append=append)
        uri = from_fs_path(str(path)) or ""
        shown = await self.window_show_document_async(types.ShowDocumentParams(uri=uri, take_focus=True))
        return uri if shown.success else None

    async def deliver(self, edits: list[Edit], folder: Folder, label: str) -> tuple[bool, str]:
        """Check the edits against the current texts and send them with workspace/applyEdit:
        (applied, why not)."""
        try:
            edit = render.workspace_edit(
                edits, lambda path: self.session.document_of(folder, path), versioned=self.versioned_edits
            )
        except render.StaleEdit as error:
            return False, str(error)
        try:
            response = await self.workspace_apply_edit_async(
                types.ApplyWorkspaceEditParams(edit=edit, label=label)
            )
        except JsonRpcException as error:
            return False, f"the editor could not apply the edit: {error.message}"
        if response.applied:
            return True, ""
        return False, response.failure_reason or "the editor refused the edit"

    def edit_for(self, result: SwarmResult, folder: Folder) -> types.WorkspaceEdit | None:
        """The winning edit as a workspace edit; None when there is none. Raises StaleEdit."""
        if result.edit is None:
            return None
        return render.workspace_edit(
            [result.edit],
            lambda path: self.session.document_of(folder, path),
            versioned=self.versioned_edits,
        )

    async def apply_result(self, run: Run) -> dict[str, Any]:
        """Apply a code answer with workspace/applyEdit; refuse a stale one; say what happened."""
        result = run.result
        title = render.TITLES[run.task.kind]
        applied, refused = False, ""
        if result.edit is not None:
            applied, refused = await self.deliver([result.edit], run.folder, f"swarm-lsp: {title}")
        message = render.edit_message(title, result, applied, refused)
        low = result.low_agreement or not applied
        self.tell(message, types.MessageType.Warning if low else types.MessageType.Info)
        return render.payload(result, applied=applied, message=message, target=run.where)

    async def refactor_codebase(
        self,
        folder: Folder,
        instruction: str,
        max_targets: int,
        voters: int | None,
        *,
        max_references: int | None = None,
        token: types.ProgressToken | None,
        request_id: Any,
    ) -> dict[str, Any]:
        """One instruction across the codebase: its blast radius, the edits, the whole change checked,
        then one multi-file edit (with a warning when the check fails)."""
        workspace = folder.require()
        title = "swarm-lsp: Refactor codebase"
        searching = {
            "token": token,
            "request_id": request_id,
            "message": "searching the index",
            "percentage": True,
        }
        async with self.tracked(title, folder, **searching) as (job, progress):

            def on_target(number: int, total: int, target: CodebaseTarget) -> None:
                progress.report(f"piece {number}/{total}: {target.citation}", 100 * (number - 1) // total)

            result = await refactor_codebase(
                workspace,
                instruction,
                lambda path: self.session.text_of(folder, path),
                max_targets=max_targets,
                max_references=max_references,
                voters=voters,
                cancel=job.cancel,
                on_progress=progress.on_swarm,
                on_target=on_target,
                on_stage=lambda message: progress.report(message, None),
            )
        verdict = render.verdict(result.agreement, result.low_agreement)
        progress.end(f"{len(result.edits)} edit(s); {verdict}")
        applied, refused = False, ""
        if result.edits:
            applied, refused = await self.deliver(result.edits, folder, title)
        markdown = render.codebase_markdown(result) + (f"\nNot applied: {refused}\n" if refused else "")
        shown = await self.show_markdown(folder, render.answer_name("codebase"), markdown)
        files = len({edit.path for edit in result.edits})
        message = f"Refactor codebase: {len(result.edits)} edit(s) in {files} file(s)"
        message += ", applied" if applied else (f", not applied: {refused}" if refused else "")
        message += f"; {verdict}"
        if result.check is not None:
            message += f"; {'WARNING: ' if result.check.broken else ''}{result.check.summary()}"
        low = result.low_agreement or (bool(result.edits) and not applied) or bool(result.withheld)
        low = low or (result.check is not None and result.check.broken)
        self.tell(
            message if shown else markdown, types.MessageType.Warning if low else types.MessageType.Info
        )
        return {
            **result.to_dict(),
            "applied": applied,
            "message": message,
            "markdown": markdown,
            "document": shown,
        }
