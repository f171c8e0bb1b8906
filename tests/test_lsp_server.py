"""The language server end to end over stdio, driven by pytest-lsp's client with VS Code's capabilities.

Real parts throughout: `swarm-lsp serve` as a subprocess, the bundled SmolLM2-135M through llama.cpp
(2 voters, 32 tokens), a real index of a small repository. The client plays a real editor: it keeps
its own copy of each buffer, applies the server's edits to it in UTF-16 (refusing an edit for an
older version, as editors do) and reports the change back with didChange.

The bundled model is tiny, so a refactor may have no valid candidate; the tests then check that the
server says so and applies nothing, and otherwise that what was applied is what it reported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.uris import from_fs_path, to_fs_path
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client
from waiting import wait_until_async

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

GREET_LINE = '    message = "héllo 😀 " + name'
UTIL = f"""def add(a, b):
    return a + b


def greet(name):
{GREET_LINE}
    return message


def total(items):
    result = 0
    for item in items:
        result = result + item
    return result
"""
FILES = {
    "pkg/util.py": UTIL,
    "pkg/stale.py": "def count(values):\n    n = 0\n    for value in values:\n        n = n + 1\n    return n\n",
    "pkg/report.py": "from pkg.util import total\n\n\ndef report(items):\n    return 'total: ' + str(total(items))\n",
    "shop/prices.py": "def sum_prices(prices):\n    amount = 0\n    for price in prices:\n        amount = amount + price\n    return amount\n",
    "shop/weights.py": "def sum_weights(weights):\n    mass = 0\n    for weight in weights:\n        mass = mass + weight\n    return mass\n",
    "README.md": "# tiny\n\nHelpers: add, greet, total, and a report.\n",
    # For the codebase renames: one function used from three files, one looked up by name in a test.
    "app/__init__.py": "",
    "app/users.py": (
        '"""Users."""\n\n\ndef fetch_user(user_id):\n    """Load one user."""\n'
        '    return {"id": user_id, "name": f"user {user_id}"}\n\n\n'
        'def load_order(order_id):\n    return {"order": order_id}\n'
    ),
    "app/service.py": (
        "from app.users import fetch_user\n\n\ndef user_name(user_id):\n"
        '    return fetch_user(user_id)["name"]\n'
    ),
    "app/api.py": (
        "import app.users as users\n\n\ndef handle(user_id):\n"
        "    # fetch_user, called through its module\n    return users.fetch_user(user_id)\n\n\n"
        "def order(order_id):\n    return users.load_order(order_id)\n"
    ),
    "tests/test_app.py": (
        "import app.users\nfrom app.api import handle, order\nfrom app.service import user_name\n\n\n"
        'def test_handle():\n    assert handle(3)["id"] == 3\n\n\n'
        'def test_user_name():\n    assert user_name(2) == "user 2"\n\n\n'
        "def test_order_is_looked_up_by_name():\n"
        '    loader = getattr(app.users, "load_" + "order")\n    assert loader(5) == order(5)\n'
    ),
}
SUM_INSTRUCTION = "Use the built-in sum function."
WAIT_S = 120.0


def utf16_offset(text: str, position: types.Position) -> int:
    """The code point offset of an LSP position counted in UTF-16 (written apart from the server's)."""
    lines = text.split("\n")
    offset = sum(len(line) + 1 for line in lines[: position.line])
    line = lines[position.line] if position.line < len(lines) else ""
    units = index = 0
    while index < len(line) and units < position.character:
        units += 2 if ord(line[index]) > 0xFFFF else 1
        index += 1
    return offset + index


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    spans = [(utf16_offset(text, e.range.start), utf16_offset(text, e.range.end), e.new_text) for e in edits]
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def namespace(value: Any) -> Any:
    """JSON results (dicts, or pygls' named tuples for notifications) with attribute access."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return SimpleNamespace(**{key: namespace(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return [namespace(item) for item in value]
    return value


class Editor:
    """The client side: buffers, edits applied as an editor would, streamed chunks, shown documents."""

    def __init__(self, client: LanguageClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.texts: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.chunks: list[Any] = []
        self.result: types.InitializeResult | None = None

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(
            ls: LanguageClient, params: types.ApplyWorkspaceEditParams
        ) -> types.ApplyWorkspaceEditResult:
            return self._apply(params)

        @client.feature("swarm/chatChunk")
        def chat_chunk(ls: LanguageClient, params: Any) -> None:
            self.chunks.append(namespace(params))

    def uri(self, rel: str) -> str:
        return from_fs_path(str(self.root / rel))

    def open(self, rel: str, text: str | None = None) -> str:
        uri = self.uri(rel)
        self.texts[uri] = (self.root / rel).read_text() if text is None else text
        self.versions[uri] = 1
        item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=self.texts[uri])
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))
        return uri

    def ensure_open(self, rel: str) -> str:
        uri = self.uri(rel)
        return uri if uri in self.texts else self.open(rel)

    def edit(self, uri: str, rng: types.Range, new_text: str) -> None:
        """Type into the buffer: one incremental didChange."""
        self.texts[uri] = apply_text_edits(self.texts[uri], [types.TextEdit(range=rng, new_text=new_text)])
        self.versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                content_changes=[types.TextDocumentContentChangePartial(range=rng, text=new_text)],
            )
        )

    def _apply(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        self.applied.append(params)
        changes = params.edit.document_changes or []
        for change in changes:
            uri = change.text_document.uri
            if uri in self.versions and change.text_document.version not in (None, self.versions[uri]):
                return types.ApplyWorkspaceEditResult(applied=False, failure_reason="version mismatch")
        for change in changes:
            uri = change.text_document.uri
            if uri not in self.texts:  # not open: the editor edits the file on disk
                path = Path(to_fs_path(uri))
                path.write_text(apply_text_edits(path.read_text(), list(change.edits)))
                continue
            before = self.texts[uri]
            self.texts[uri] = apply_text_edits(before, list(change.edits))
            self.versions[uri] += 1
            self.client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                    content_changes=[types.TextDocumentContentChangeWholeDocument(text=self.texts[uri])],
                )
            )
        return types.ApplyWorkspaceEditResult(applied=True)

    async def command(
        self, name: str, arguments: dict[str, Any] | None = None, token: str | None = None
    ) -> Any:
        if token is not None:  # a client-made token: known to the test client before any report
            self.client.progress_reports.setdefault(token, [])
        params = types.ExecuteCommandParams(
            command=name, arguments=[arguments] if arguments is not None else None, work_done_token=token
        )
        return namespace(await self.client.workspace_execute_command_async(params))

    async def actions(
        self, uri: str, rng: types.Range, diagnostics: list[types.Diagnostic] = ()
    ) -> list[types.CodeAction]:
        params = types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=rng,
            context=types.CodeActionContext(diagnostics=list(diagnostics)),
        )
        return await self.client.text_document_code_action_async(params)

    def progress(self, token: str) -> list[Any]:
        return self.client.progress_reports.get(token, [])

    def ended(self, token: str) -> types.WorkDoneProgressEnd | None:
        return next((p for p in self.progress(token) if isinstance(p, types.WorkDoneProgressEnd)), None)

    def chunks_for(self, kind: str) -> list[Any]:
        return [chunk for chunk in self.chunks if chunk.kind == kind]


async def wait_until(what: str, condition: Callable[[], Any]) -> Any:
    """`wait_until_async` with this module's deadline (the bundled model answers slowly on 2 cores)."""
    return await wait_until_async(what, condition, timeout=WAIT_S)


def line_range(first: int, last_exclusive: int) -> types.Range:
    return types.Range(start=types.Position(first, 0), end=types.Position(last_exclusive, 0))


def range_json(rng: types.Range) -> dict[str, Any]:
    return {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }


async def raw_request(client: LanguageClient, method: str, params: Any, msg_id: str) -> Any:
    """Send a request exactly as given, past the client's own type checks."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), WAIT_S)


def server_env(data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_INDEX__LOCATION": str(data),
        "SWARM_LSP_CONFIG_FILE": str(data / "no-user-config.toml"),
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": "2048",
        "SWARM_LSP_SWARM__VOTERS": "2",
        "SWARM_LSP_SWARM__MAX_TOKENS": "32",
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def editor(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    client = make_test_lsp_client()
    editor = Editor(client, repo)
    await client.start_io(
        sys.executable, "-m", "swarm_lsp", "serve", env=server_env(tmp_path_factory.mktemp("data"))
    )
    folder = types.WorkspaceFolder(uri=from_fs_path(str(repo)), name="repo")
    editor.result = await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=folder.uri,
            workspace_folders=[folder],
            initialization_options={"swarm": {"strategy": "auto"}},
        )
    )
    yield editor
    await client.shutdown_session()
    await client.stop()


# ------------------------------------------------------------------------------------------- tests


async def test_initialize_declares_the_features_and_indexing_reports_progress(editor: Editor) -> None:
    capabilities = editor.result.capabilities
    assert capabilities.position_encoding == types.PositionEncodingKind.Utf16
    assert capabilities.code_action_provider.resolve_provider is True
    assert set(capabilities.execute_command_provider.commands) >= {
        "swarm.explain",
        "swarm.refactor",
        "swarm.document",
        "swarm.fix",
        "swarm.ask",
        "swarm.chat",
        "swarm.explainCodebase",
        "swarm.refactorCodebase",
        "swarm.reindex",
        "swarm.status",
    }
    assert capabilities.text_document_sync.change == types.TextDocumentSyncKind.Incremental

    def indexing_ended() -> Any:
        for reports in editor.client.progress_reports.values():
            if (
                reports
                and isinstance(reports[0], types.WorkDoneProgressBegin)
                and "indexing" in reports[0].title
            ):
                return next((r for r in reports if isinstance(r, types.WorkDoneProgressEnd)), None)
        return None

    end = await wait_until("the indexing progress to end", indexing_ended)
    assert f"{len(FILES)} files parsed" in end.message
    status = await editor.command("swarm.status")
    (folder,) = status.folders
    assert folder.index.files == len(FILES) and folder.index.watching is True
    assert folder.settings.voters == 2 and folder.settings.strategy == "auto"
    assert status.positionEncoding == "utf-16"


async def test_listing_code_actions_runs_no_model(editor: Editor) -> None:
    uri = editor.ensure_open("pkg/util.py")
    diagnostic = types.Diagnostic(
        range=types.Range(start=types.Position(12, 8), end=types.Position(12, 14)),
        message="use sum() instead of a loop",
        source="lint",
    )
    for _ in range(50):
        listed = await editor.actions(uri, line_range(9, 14), [diagnostic])
    assert [action.title for action in listed] == [
        "Fix: use sum() instead of a loop",
        "Explain",
        "Refactor...",
        "Add docstring",
        "Ask about this code",
    ]
    assert all(action.edit is None and action.command is None and action.data for action in listed)
    status = await editor.command("swarm.status")
    assert status.folders[0].modelLoaded is False, "listing code actions must not load the model"
    assert status.running == []


async def test_refactor_across_the_codebase_applies_one_edit_spanning_files(editor: Editor) -> None:
    applied_before = len(editor.applied)
    instruction = "In sum_prices and sum_weights: " + SUM_INSTRUCTION
    result = await editor.command(
        "swarm.refactorCodebase", {"instruction": instruction, "maxTargets": 2}, token="codebase-1"
    )
    assert editor.ended("codebase-1") is not None
    citations = [t.citation for t in result.targets]
    assert len(citations) == 2 and {"shop/prices.py:1-5", "shop/weights.py:1-5"} & set(citations), citations
    assert result.summary.startswith("Instruction: ")
    assert isinstance(result.agreement, float) and result.sources
    if not result.edits:
        assert result.applied is False and len(editor.applied) == applied_before
        assert all(not t.changed and t.note for t in result.targets)
        return
    assert result.applied is True, result.message
    (params,) = editor.applied[applied_before:]
    sent = [
        (Path(to_fs_path(c.text_document.uri)).relative_to(editor.root).as_posix(), e.new_text)
        for c in params.edit.document_changes
        for e in c.edits
    ]
    assert sorted(sent) == sorted((e.path, e.new_text) for e in result.edits)
    assert len(params.edit.document_changes) == len({e.path for e in result.edits})
    for edit in result.edits:
        uri = editor.uri(edit.path)
        text = editor.texts[uri] if uri in editor.texts else (editor.root / edit.path).read_text()
        assert edit.new_text in text
    answer = await editor.command("swarm.explainCodebase", {})
    assert answer.answer.strip() and answer.sources and isinstance(answer.low_agreement, bool)


async def test_resolving_explain_shows_the_answer_with_agreement_and_sources(editor: Editor) -> None:
    uri = editor.ensure_open("pkg/util.py")
    (explain,) = [a for a in await editor.actions(uri, line_range(9, 14)) if a.title == "Explain"]
    shown_before = len(editor.client.shown_documents)
    resolved = await editor.client.code_action_resolve_async(explain)
    assert resolved.title == "Explain" and resolved.edit is None
    assert len(editor.client.shown_documents) == shown_before + 1
    document = Path(to_fs_path(editor.client.shown_documents[-1].uri))
    markdown = document.read_text()
    assert markdown.startswith("# Explain pkg/util.py:10-14")
    assert "agreement" in markdown.lower() and "Sources: " in markdown and "pkg/util.py:10-14" in markdown
    chunks = editor.chunks_for("explain")
    assert chunks and chunks[-1].done is True
    assert [c for c in chunks if not c.done], "the answer should stream before the vote"
    assert chunks[-1].text.strip() in markdown


async def test_executing_refactor_applies_exactly_the_reported_edit(editor: Editor) -> None:
    uri = editor.ensure_open("pkg/util.py")
    before, applied_before = editor.texts[uri], len(editor.applied)
    arguments = {"uri": uri, "range": range_json(line_range(9, 14)), "instruction": SUM_INSTRUCTION}
    result = await editor.command("swarm.refactor", arguments, token="refactor-1")
    assert editor.ended("refactor-1") is not None
    assert isinstance(result.agreement, float) and result.sources
    assert (
        result.target.text
        == "def total(items):\n    result = 0\n    for item in items:\n        result = result + item\n    return result"
    )
    if result.edit is None:
        assert result.applied is False and "no valid change" in result.message
        assert len(editor.applied) == applied_before and editor.texts[uri] == before
        return
    assert result.applied is True, result.message
    (params,) = editor.applied[applied_before:]
    (change,) = params.edit.document_changes
    (text_edit,) = change.edits
    assert change.text_document.uri == uri and text_edit.new_text == result.edit.new_text
    assert editor.texts[uri] == before.replace(result.edit.original_text, result.edit.new_text, 1)
    assert any(m.message.startswith("Refactor: applied") for m in editor.client.messages)


async def test_a_fix_action_comes_from_the_diagnostic_and_resolves_to_its_edit(editor: Editor) -> None:
    uri = editor.open("pkg/area.py", "def area(width, height):\n    return width * heigth\n")
    diagnostic = types.Diagnostic(
        range=types.Range(start=types.Position(1, 19), end=types.Position(1, 25)),
        message="undefined name 'heigth'",
        source="pyflakes",
    )
    cursor = types.Range(start=types.Position(1, 4), end=types.Position(1, 4))
    fix = (await editor.actions(uri, cursor, [diagnostic]))[0]
    assert fix.title == "Fix: undefined name 'heigth'"
    assert fix.kind == "quickfix.swarm" and list(fix.diagnostics) == [diagnostic]
    messages_before = len(editor.client.messages)
    resolved = await editor.client.code_action_resolve_async(fix)
    message = editor.client.messages[messages_before].message
    if resolved.edit is None:
        assert "no valid change" in message
        return
    assert message.startswith("Fix: proposed")
    (change,) = resolved.edit.document_changes
    (text_edit,) = change.edits
    assert change.text_document.version == editor.versions[uri]
    # The fix covers the whole line the diagnostic is on.
    assert text_edit.range == types.Range(start=types.Position(1, 0), end=types.Position(1, 25))
    # The editor applies the resolved edit itself.
    assert editor._apply(types.ApplyWorkspaceEditParams(edit=resolved.edit)).applied
    assert editor.texts[uri] == f"def area(width, height):\n{text_edit.new_text}\n"


async def test_chat_keeps_the_conversation_across_two_turns(editor: Editor) -> None:
    uri = editor.uri("pkg/util.py")
    first = await editor.command(
        "swarm.chat", {"message": "What does total return?", "uri": uri}, token="chat-1"
    )
    conversation = first.conversationId
    assert conversation
    second = await editor.command(
        "swarm.chat", {"message": "And for an empty list?", "conversationId": conversation}, token="chat-2"
    )
    assert second.conversationId == conversation
    # The context is retrieved once, at the first turn, and kept for the next.
    assert second.sources == first.sources
    streamed = [chunk for chunk in editor.chunks_for("chat") if chunk.conversationId == conversation]
    assert sum(1 for chunk in streamed if chunk.done) == 2
    transcript = Path(to_fs_path(editor.client.shown_documents[-1].uri)).read_text()
    assert transcript.index("What does total return?") < transcript.index("And for an empty list?")
    assert transcript.count("## swarm-lsp") == 2


async def test_cancelling_stops_decoding_and_the_server_goes_on(editor: Editor, repo: Path) -> None:
    # Long answers for this test only: the settings are changed (and put back) from the editor.
    editor.client.set_configuration({"swarm": {"max_tokens": 400}}, section="swarm-lsp")
    editor.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

    async def max_tokens() -> int:
        return (await editor.command("swarm.status")).folders[0].settings.max_tokens

    async def max_tokens_is(value: int) -> bool:
        return await max_tokens() == value

    await wait_until("the server to apply max_tokens = 400", lambda: max_tokens_is(400))
    counting = {"message": "Count from 1 to 300, separated by commas."}

    # 1. $/cancelRequest on the executeCommand request.
    editor.client.progress_reports.update({"cancel-1": [], "cancel-2": []})
    started = len(editor.chunks)
    request = types.ExecuteCommandParams(
        command="swarm.chat", arguments=[counting], work_done_token="cancel-1"
    )
    pending = asyncio.ensure_future(
        editor.client.protocol.send_request_async(
            types.WORKSPACE_EXECUTE_COMMAND, request, msg_id="cancel-me"
        )
    )
    await wait_until("the first streamed text", lambda: any(not c.done for c in editor.chunks[started:]))
    editor.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException) as cancelled:
        await pending
    assert cancelled.value.code == -32800
    end = await wait_until("the cancelled request's progress to end", lambda: editor.ended("cancel-1"))
    assert end.message.startswith("cancelled after ")
    assert int(end.message.split()[2]) < 2 * 400, "decoding should stop long before max_tokens"

    # 2. The cancel button of the progress (window/workDoneProgress/cancel).
    started = len(editor.chunks)
    request = types.ExecuteCommandParams(
        command="swarm.chat", arguments=[counting], work_done_token="cancel-2"
    )
    pending = asyncio.ensure_future(editor.client.workspace_execute_command_async(request))
    await wait_until("the first streamed text", lambda: any(not c.done for c in editor.chunks[started:]))
    editor.client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token="cancel-2"))
    with pytest.raises(JsonRpcException) as cancelled:
        await pending
    assert cancelled.value.code == -32800
    assert editor.ended("cancel-2").message.startswith("cancelled after ")
    assert not [c for c in editor.chunks[started:] if c.done], "a cancelled chat has no final answer"

    editor.client.set_configuration({}, section="swarm-lsp")
    editor.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    await wait_until("the server to apply the default max_tokens again (32)", lambda: max_tokens_is(32))
    answer = await editor.command("swarm.ask", {"question": "Which function adds two numbers?"})
    assert answer.answer.strip(), "the server answers again after the cancellations"


async def test_actions_see_the_unsaved_buffer_with_positions_in_utf16(editor: Editor) -> None:
    uri = editor.ensure_open("pkg/util.py")
    # Add a function at the end, then type "!" right after the emoji (two UTF-16 units).
    end_line = len(editor.texts[uri].split("\n")) - 1
    added = 'def shout(word):\n    return word.upper() + " 😀!"\n'
    editor.edit(
        uri, types.Range(start=types.Position(end_line, 0), end=types.Position(end_line, 0)), "\n\n" + added
    )
    row = editor.texts[uri].split("\n").index(GREET_LINE)
    after_emoji = utf16_len(GREET_LINE[: GREET_LINE.index("😀") + 1])
    editor.edit(
        uri, types.Range(start=types.Position(row, after_emoji), end=types.Position(row, after_emoji)), "!"
    )
    lines = editor.texts[uri].split("\n")
    assert lines[row] == '    message = "héllo 😀! " + name'
    # Select from `name` on that line (after the emoji) to the end of the unsaved function.
    start = utf16_len(lines[row][: lines[row].rindex("name")])
    last = lines.index('    return word.upper() + " 😀!"')
    rng = types.Range(start=types.Position(row, start), end=types.Position(last, utf16_len(lines[last])))
    result = await editor.command("swarm.explain", {"uri": uri, "range": range_json(rng)})
    expected = "\n".join(lines[row : last + 1])[lines[row].rindex("name") :]
    assert result.target.text == expected
    assert result.target.text.startswith("name\n") and result.target.text.endswith('" 😀!"')
    assert result.target.version == editor.versions[uri]
    assert result.target.range.start.character == start
    assert result.target.range.end.character == utf16_len(lines[last])
    assert result.answer.strip()


async def test_a_stale_edit_is_refused_and_nothing_is_applied(editor: Editor) -> None:
    uri = editor.open("pkg/stale.py")
    applied_before = len(editor.applied)
    arguments = {
        "uri": uri,
        "range": range_json(line_range(0, 5)),
        "instruction": "Use len(values) instead of the loop.",
    }
    pending = asyncio.ensure_future(editor.command("swarm.refactor", arguments, token="stale-1"))
    await wait_until("the refactor to start", lambda: editor.progress("stale-1"))
    # The user types inside the selection while the voters run.
    editor.edit(uri, types.Range(start=types.Position(1, 9), end=types.Position(1, 9)), "  # typed meanwhile")
    result = await pending
    assert result.applied is False
    assert len(editor.applied) == applied_before
    assert editor.texts[uri].split("\n")[1] == "    n = 0  # typed meanwhile"
    if result.edit is None:
        assert "no valid change" in result.message
    else:
        assert "changed at lines 1-5 since the edit was made" in result.message
        assert any("not applied" in m.message for m in editor.client.messages)


async def test_malformed_requests_get_errors_and_the_server_keeps_serving(
    editor: Editor, tmp_path: Path
) -> None:
    uri = editor.uri("pkg/util.py")
    bad_range = {"textDocument": {"uri": uri}, "range": "nonsense", "context": {"diagnostics": []}}
    with pytest.raises(JsonRpcException) as error:
        await raw_request(editor.client, "textDocument/codeAction", bad_range, "bad-1")
    assert error.value.code == -32602 and "range" in error.value.message

    async def command_error(name: str, arguments: list[Any] | None) -> JsonRpcException:
        with pytest.raises(JsonRpcException) as caught:
            await editor.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=name, arguments=arguments)
            )
        return caught.value

    assert (await command_error("swarm.nothing", None)).code == -32602
    wrong = await command_error("swarm.refactor", [42])
    assert wrong.code == -32602 and "one argument, an object" in wrong.message
    outside = await command_error("swarm.explain", [{"uri": from_fs_path(str(tmp_path / "x.py"))}])
    assert outside.code == -32602 and "outside the workspace folders" in outside.message
    missing = await command_error(
        "swarm.document", [{"uri": editor.uri("pkg/gone.py"), "range": range_json(line_range(0, 1))}]
    )
    assert missing.code == -32602 and "does not exist" in missing.message
    with pytest.raises(JsonRpcException) as unknown:
        await raw_request(editor.client, "swarm/nothing", {}, "bad-2")
    assert unknown.value.code == -32601
    forged = types.CodeAction(title="Explain", data={"action": "format the disk"})
    with pytest.raises(JsonRpcException) as not_ours:
        await editor.client.code_action_resolve_async(forged)
    assert not_ours.value.code == -32602 and "not made by swarm-lsp" in not_ours.value.message
    listed = await editor.actions(uri, line_range(0, 2))
    assert [a.title for a in listed][:1] == ["Explain"]


async def test_invalid_settings_from_the_editor_are_reported_and_the_old_ones_kept(editor: Editor) -> None:
    before = len(editor.client.messages)
    editor.client.set_configuration({"swarm": {"voters": "many"}}, section="swarm-lsp")
    editor.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    message = await wait_until(
        "the settings error",
        lambda: next((m for m in editor.client.messages[before:] if "swarm.voters" in m.message), None),
    )
    assert message.type == types.MessageType.Error
    assert "'many'" in message.message and "keeping the previous settings" in message.message
    status = await editor.command("swarm.status")
    assert status.folders[0].settings.voters == 2
    editor.client.set_configuration({}, section="swarm-lsp")


async def test_reindex_reports_progress_and_counts(editor: Editor, repo: Path) -> None:
    (repo / "pkg/extra.py").write_text("def extra():\n    return 1\n")
    result = await editor.command("swarm.reindex", {}, token="reindex-1")
    assert result.parsed >= 1 and result.root == str(repo)
    assert "files parsed" in editor.ended("reindex-1").message


async def test_a_rename_across_three_files_is_one_checked_workspace_edit(editor: Editor, repo: Path) -> None:
    applied_before = len(editor.applied)
    result = await editor.command(
        "swarm.refactorCodebase", {"instruction": "rename fetch_user to get_user"}, token="rename-1"
    )
    messages = [getattr(report, "message", "") or "" for report in editor.progress("rename-1")]
    assert any("blast radius: 4 site(s) of fetch_user in 3 file(s)" in m for m in messages), messages
    (radius,) = result.blast_radius
    assert radius.files == ["app/api.py", "app/service.py", "app/users.py"] and radius.uncertain == 0
    assert result.rename.to == "get_user" and len(result.edits) == 4
    assert result.check.broken is False and result.check.tests.passed is True, result.check
    assert result.applied is True, result.message
    (params,) = editor.applied[applied_before:]
    assert {
        Path(to_fs_path(c.text_document.uri)).relative_to(repo).as_posix()
        for c in params.edit.document_changes
    } == {
        "app/api.py",
        "app/service.py",
        "app/users.py",
    }
    api = (repo / "app/api.py").read_text()
    assert "users.get_user(user_id)" in api and "# fetch_user, called" in api, "comments are not code"
    assert "from app.users import get_user" in (repo / "app/service.py").read_text()
    assert "def get_user(user_id):" in (repo / "app/users.py").read_text()


async def test_a_change_that_breaks_the_tests_is_flagged(editor: Editor, repo: Path) -> None:
    result = await editor.command("swarm.refactorCodebase", {"instruction": "rename load_order to get_order"})
    assert len(result.edits) == 2, result.summary
    assert result.check.broken is True and result.check.tests.passed is False
    assert result.check.tests.failed_before is False, "the tests passed before the change"
    assert "test_order_is_looked_up_by_name" in result.check.tests.output
    assert "WARNING" in result.message and "breaks the tests" in result.message
    assert "**Warning: the change breaks the tests" in result.summary


async def test_with_index_auto_off_only_a_reindex_builds_the_index(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = make_test_lsp_client()
    other = Editor(client, repo)
    await client.start_io(
        sys.executable, "-m", "swarm_lsp", "serve", env=server_env(tmp_path_factory.mktemp("data-manual"))
    )
    folder = types.WorkspaceFolder(uri=from_fs_path(str(repo)), name="repo")
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=folder.uri,
            workspace_folders=[folder],
            initialization_options={"index": {"auto": False}},
        )
    )
    try:
        status = await other.command("swarm.status")
        (state,) = status.folders
        assert state.index.files == 0 and state.index.watching is False
        assert not any("indexing" in str(reports[:1]) for reports in client.progress_reports.values())
        counts = await other.command("swarm.reindex", {})
        files = len([path for path in repo.rglob("*.py") if ".git" not in path.parts])
        assert counts.parsed >= files > 0  # earlier tests in this module add files to the repo
        (state,) = (await other.command("swarm.status")).folders
        assert state.index.files == counts.parsed
    finally:
        await client.shutdown_session()
        await client.stop()
