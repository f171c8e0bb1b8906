"""Inline completion (textDocument/inlineCompletion) end to end over stdio with pytest-lsp.

The real `swarm-lsp serve` with the bundled SmolLM2-135M: ghost text after typing, inserted at the
cursor without touching what follows; typing into a suggestion keeps serving its remainder; a newer
request supersedes an older one; an unsaved buffer is completed from the buffer, not the disk;
malformed params get -32602. The tiny model's words are not asserted, only their placement.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.uris import from_fs_path
from pytest_lsp import client_capabilities, make_test_lsp_client
from test_lsp_server import Editor, raw_request, server_env

from swarm_lsp.basics import CancellationToken
from swarm_lsp.completion import Completer
from swarm_lsp.config import load_settings
from swarm_lsp.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MATHS = "def add(a, b):\n    return a + b\n\n\ndef mean(values):\n    return sum(values) / len(values)\n"
USE = "from pkg.maths import add, mean\n\n\ndef average_of_pairs(pairs):\n    total = 0\n    for a, b in pairs:\n        total = add(\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("completion")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "maths.py").write_text(MATHS)
    (root / "pkg" / "use.py").write_text(USE)
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def editor(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    client = make_test_lsp_client()
    editor = Editor(client, repo)
    env = server_env(tmp_path_factory.mktemp("data")) | {"SWARM_LSP_COMPLETION__DEBOUNCE_MS": "30"}
    await client.start_io(sys.executable, "-m", "swarm_lsp", "serve", env=env)
    folder = types.WorkspaceFolder(uri=from_fs_path(str(repo)), name="completion")
    editor.result = await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=folder.uri,
            workspace_folders=[folder],
        )
    )
    yield editor
    await client.shutdown_session()
    await client.stop()


async def inline(editor: Editor, uri: str, line: int, character: int) -> types.InlineCompletionList | None:
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )
    return await editor.client.text_document_inline_completion_async(params)


def end_of(editor: Editor, uri: str, line: int) -> types.Position:
    return types.Position(line, len(editor.texts[uri].split("\n")[line]))


async def test_the_server_offers_inline_completion(editor: Editor) -> None:
    assert editor.result.capabilities.inline_completion_provider is not None


async def test_ghost_text_appears_at_the_cursor_and_typing_into_it_serves_the_rest(editor: Editor) -> None:
    uri = editor.open("pkg/use.py")
    cursor = end_of(editor, uri, 6)  # after "        total = add("
    first = await inline(editor, uri, cursor.line, cursor.character)
    assert first is not None and len(first.items) == 1
    item = first.items[0]
    assert item.range.start == item.range.end == cursor  # inserted, never replacing what follows
    assert item.insert_text.strip() and "\n" not in item.insert_text  # mid-expression: one line

    typed = item.insert_text[:1]
    editor.edit(uri, types.Range(cursor, cursor), typed)
    after_typing = await inline(editor, uri, cursor.line, cursor.character + len(typed))
    assert after_typing is not None
    assert after_typing.items[0].insert_text == item.insert_text[len(typed) :]

    accepted = editor.texts[uri].split("\n")[6] + after_typing.items[0].insert_text
    assert accepted == "        total = add(" + item.insert_text


async def test_a_newer_request_supersedes_the_older_one(editor: Editor) -> None:
    uri = editor.ensure_open("pkg/use.py")
    editor.edit(uri, types.Range(types.Position(7, 0), types.Position(7, 0)), "    return ")
    cursor = end_of(editor, uri, 7)
    older = asyncio.ensure_future(inline(editor, uri, cursor.line, cursor.character))
    await asyncio.sleep(0)  # one turn of the loop: the older request is sent first (no time passes)
    newer = await inline(editor, uri, cursor.line, cursor.character)
    assert await older is None
    assert newer is None or newer.items[0].range.start == cursor


async def test_an_unsaved_buffer_is_completed_from_the_buffer(editor: Editor, repo: Path) -> None:
    buffer = "def scale(values, factor):\n    result = []\n    for value in values:\n        result.append(\n"
    uri = editor.open("pkg/draft.py", buffer)  # not on disk at all
    assert not (repo / "pkg" / "draft.py").exists()
    cursor = end_of(editor, uri, 3)
    answer = await inline(editor, uri, cursor.line, cursor.character)
    assert answer is not None and answer.items[0].range.start == cursor
    assert answer.items[0].insert_text.strip()


async def test_malformed_params_get_invalid_params(editor: Editor) -> None:
    uri = editor.ensure_open("pkg/use.py")
    bad = {"textDocument": {"uri": uri}, "position": "here", "context": {"triggerKind": 1}}
    with pytest.raises(JsonRpcException) as error:
        await raw_request(editor.client, "textDocument/inlineCompletion", bad, "inline-bad-1")
    assert error.value.code == -32602
    outside = {"textDocument": {"uri": "file:///elsewhere/x.py"}, "position": {"line": 0, "character": 0},
               "context": {"triggerKind": 1}}  # fmt: skip
    with pytest.raises(JsonRpcException) as error:
        await raw_request(editor.client, "textDocument/inlineCompletion", outside, "inline-bad-2")
    assert error.value.code == -32602 and "outside the workspace folders" in error.value.message


async def test_a_cancelled_completion_stops_decoding_and_answers_nothing(tmp_path: Path, repo: Path) -> None:
    """In process: the core's completer with a token cancelled mid-decoding (a superseded request)."""
    env = server_env(tmp_path) | {"SWARM_LSP_COMPLETION__MAX_TOKENS": "1000"}
    loaded = load_settings(repo, env=env, user_file=tmp_path / "none.toml")
    workspace = Workspace(repo, loaded=loaded, embedder=None)
    completer = Completer(workspace)
    lines = ["def long_story():", "    "]
    cancel = CancellationToken()
    try:
        await asyncio.to_thread(workspace.completion_backend)  # loaded before the clock starts
        asyncio.get_running_loop().call_later(0.5, cancel.cancel)
        assert await completer.complete("pkg/story.py", lines, 1, 4, cancel=cancel) is None
        stats = workspace.completion_backend().last_stats
        assert stats is not None and stats.generated_tokens < 1000
        after = await completer.complete("pkg/use.py", USE.split("\n"), 6, len("        total = add("))
        assert after is None or after.text.strip()  # the model answers again after a cancellation
    finally:
        await workspace.aclose()


async def test_a_model_that_cannot_load_is_told_once_and_typing_goes_on(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = make_test_lsp_client()
    editor = Editor(client, repo)
    env = server_env(tmp_path_factory.mktemp("data")) | {
        "SWARM_LSP_COMPLETION__MODEL": str(repo / "missing" / "model.gguf"),
        "SWARM_LSP_COMPLETION__DEBOUNCE_MS": "0",
    }
    await client.start_io(sys.executable, "-m", "swarm_lsp", "serve", env=env)
    folder = types.WorkspaceFolder(uri=from_fs_path(str(repo)), name="completion")
    await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=folder.uri,
            workspace_folders=[folder],
        )
    )
    try:
        uri = editor.open("pkg/use.py")
        cursor = end_of(editor, uri, 6)
        first = await inline(editor, uri, cursor.line, cursor.character)
        second = await inline(editor, uri, cursor.line, cursor.character)
        told = [m for m in client.messages if "no inline completion" in m.message]
    finally:
        await client.shutdown_session()
        await client.stop()
    assert first is None and second is None
    assert len(told) == 1 and "model.gguf" in told[0].message
    assert told[0].type == types.MessageType.Warning
