"""The language server's plain parts, without a model: positions in each encoding, buffers edited
incrementally, code action listing, command arguments, codebase planning, and the transports.

The end-to-end tests over stdio are in test_lsp_server.py; Neovim as the client in test_lsp_nvim.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.uris import from_fs_path

from swarm_lsp.codebase import plan_targets
from swarm_lsp.config import load_settings
from swarm_lsp.lsp import actions, parse_address
from swarm_lsp.lsp.documents import UTF8, UTF16, UTF32, Document, Documents, to_client_units, to_code_points
from swarm_lsp.lsp.render import SourceLinks, StaleEdit, workspace_edit
from swarm_lsp.lsp.session import Folder, Target, merge_options
from swarm_lsp.swarm.tasks import Edit, TextRange
from swarm_lsp.workspace import Workspace

EMOJI_LINE = '    message = "héllo 😀 " + name'
URI = "file:///work/pkg/util.py"


def position(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def lsp_range(a: int, b: int, c: int, d: int) -> types.Range:
    return types.Range(start=position(a, b), end=position(c, d))


# ----------------------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("encoding", "client_column"),
    [
        (UTF16, len('    message = "héllo 😀') + 1),
        (UTF8, len('    message = "héllo 😀'.encode())),
        (UTF32, 22),
    ],
)
def test_a_column_after_an_emoji_converts_in_each_encoding(encoding: str, client_column: int) -> None:
    code_points = EMOJI_LINE.index("😀") + 1  # just after the emoji
    assert to_code_points(EMOJI_LINE, client_column, encoding) == code_points
    assert to_client_units(EMOJI_LINE, code_points, encoding) == client_column


def test_columns_inside_a_character_round_down_and_past_the_end_clamp() -> None:
    after_e = EMOJI_LINE.index("😀")
    utf16_inside_emoji = len(EMOJI_LINE[:after_e].encode("utf-16-le")) // 2 + 1
    assert to_code_points(EMOJI_LINE, utf16_inside_emoji, UTF16) == after_e
    assert to_code_points(EMOJI_LINE, 10_000, UTF16) == len(EMOJI_LINE)
    assert to_code_points("abc\r", 10, UTF16) == 3  # the \r of a \r\n break is not a column


# ------------------------------------------------------------------------------------------ buffers


def change(rng: types.Range | None, text: str) -> types.TextDocumentContentChangeEvent:
    if rng is None:
        return types.TextDocumentContentChangeWholeDocument(text=text)
    return types.TextDocumentContentChangePartial(range=rng, text=text)


def test_incremental_changes_after_an_emoji_land_where_the_editor_put_them() -> None:
    text = f"def greet(name):\n{EMOJI_LINE}\n    return message\n"
    document = Document.from_text(URI, text, 1, UTF16)
    # Type "!" right after the emoji: UTF-16 counts the emoji as two units.
    column = len(EMOJI_LINE[: EMOJI_LINE.index("😀") + 1].encode("utf-16-le")) // 2
    document.apply_change(change(lsp_range(1, column, 1, column), "!"), 2)
    assert document.lines[1] == '    message = "héllo 😀! " + name'
    # Replace across lines: from the middle of line 1 to the middle of line 2.
    start = len('    message = "héllo 😀! " + '.encode("utf-16-le")) // 2
    document.apply_change(change(lsp_range(1, start, 2, len("    return ")), "name\n    return "), 3)
    assert document.text == 'def greet(name):\n    message = "héllo 😀! " + name\n    return message\n'
    assert document.version == 3 and document.changed
    document.apply_change(change(None, "x = 1\n"), 4)
    assert document.lines == ["x = 1", ""]


def test_only_newlines_split_lines_not_form_feeds_or_unicode_separators() -> None:
    text = "a = '\u2028'\n\x0cb = 2\r\nc = 3"
    document = Document.from_text(URI, text, 1)
    assert len(document.lines) == 3
    assert document.position(position(2, 0)) == (2, 0)
    document.apply_change(change(lsp_range(1, 6, 1, 6), "0"), 2)  # before the \r
    assert document.text == "a = '\u2028'\n\x0cb = 20\r\nc = 3"


def test_a_change_that_ends_before_it_starts_is_refused() -> None:
    document = Document.from_text(URI, "abc\ndef\n", 1)
    with pytest.raises(ValueError, match="ends"):
        document.apply_change(change(lsp_range(1, 2, 0, 1), "x"), 2)


def test_selections_become_core_ranges_and_back() -> None:
    text = f"def greet(name):\n{EMOJI_LINE}\n    return message\n"
    document = Document.from_text(URI, text, 1, UTF16)
    # Linewise selection ending at column 0 of the next line: whole lines 1-2.
    whole = document.text_range(lsp_range(0, 0, 2, 0))
    assert whole == TextRange(1, 2)
    assert document.range_text(whole) == f"def greet(name):\n{EMOJI_LINE}"
    # A selection of `name` after the emoji: code point columns, and back to UTF-16 units.
    begin = len(EMOJI_LINE[: EMOJI_LINE.rindex("name")].encode("utf-16-le")) // 2
    partial = document.text_range(lsp_range(1, begin, 1, begin + 4))
    assert partial == TextRange(2, 2, EMOJI_LINE.rindex("name"), None)
    assert document.range_text(partial) == "name"
    assert document.lsp_range(partial) == lsp_range(1, begin, 1, begin + 4)
    # A cursor stays empty; a backwards range is an error.
    assert document.text_range(lsp_range(1, 4, 1, 4)) == TextRange(2, 2, 4, 4)
    with pytest.raises(ValueError, match="before it starts"):
        document.text_range(lsp_range(2, 0, 1, 0))


def test_documents_find_a_buffer_by_path_whatever_the_uri_spelling(tmp_path: Path) -> None:
    documents = Documents()
    file = tmp_path / "a.py"
    file.write_text("x = 1\n")
    uri = from_fs_path(str(tmp_path / "." / "a.py"))
    documents.open(types.TextDocumentItem(uri=uri, language_id="python", version=1, text="x = 2\n"))
    assert documents.at_path(file).text == "x = 2\n"
    documents.close(uri)
    assert documents.at_path(file) is None
    with pytest.raises(ValueError, match="not open"):
        documents.get(uri)
    with pytest.raises(ValueError, match="unknown position encoding"):
        Documents("PositionEncodingKind.Utf16")


# ------------------------------------------------------------------------------------- code actions


def action_params(rng: types.Range, diagnostics=(), only=None) -> types.CodeActionParams:
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        range=rng,
        context=types.CodeActionContext(diagnostics=list(diagnostics), only=only),
    )


def test_listing_offers_each_action_with_data_for_resolving_clients() -> None:
    diagnostic = types.Diagnostic(
        range=lsp_range(3, 4, 3, 9), message="undefined name 'resul'", source="pyflakes"
    )
    elsewhere = types.Diagnostic(range=lsp_range(40, 0, 40, 1), message="far away")
    listed = actions.list_actions(
        action_params(lsp_range(2, 0, 5, 0), [diagnostic, elsewhere]), resolve=True, version=7
    )
    assert [a.title for a in listed] == [
        "Fix: undefined name 'resul'",
        "Explain",
        "Refactor...",
        "Add docstring",
        "Ask about this code",
    ]
    assert all(a.command is None and a.edit is None for a in listed)
    fix = listed[0]
    assert fix.data["diagnostic"] == {"message": "undefined name 'resul'", "source": "pyflakes"}
    assert fix.data["range"] == {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 9}}
    assert fix.data["version"] == 7 and fix.kind == actions.KIND_FIX
    only_fixes = actions.list_actions(
        action_params(lsp_range(2, 0, 5, 0), [diagnostic], only=["quickfix"]), resolve=True, version=7
    )
    assert [a.kind for a in only_fixes] == [actions.KIND_FIX]


def test_listing_gives_commands_to_clients_that_do_not_resolve() -> None:
    listed = actions.list_actions(action_params(lsp_range(0, 0, 1, 0)), resolve=False, version=None)
    assert [a.command.command for a in listed] == [
        actions.EXPLAIN,
        actions.REFACTOR,
        actions.DOCUMENT,
        actions.ASK,
    ]
    assert listed[1].command.arguments == [{"uri": URI, "range": actions._range_json(lsp_range(0, 0, 1, 0))}]


def test_resolving_refactor_only_fills_in_its_command() -> None:
    listed = actions.list_actions(action_params(lsp_range(0, 0, 1, 0)), resolve=True, version=3)
    refactor = next(a for a in listed if a.title == "Refactor...")
    request = actions.resolve_request(refactor.data)
    assert request.kind in actions.NEEDS_INPUT
    resolved = actions.command_action(refactor)
    assert resolved.command.command == actions.REFACTOR and resolved.edit is None


@pytest.mark.parametrize(
    ("command", "arguments", "message"),
    [
        (actions.REFACTOR, [42], "takes one argument, an object"),
        (actions.REFACTOR, [{"uri": URI}], "needs a range"),
        (actions.DOCUMENT, [{"range": actions._range_json(lsp_range(0, 0, 0, 1))}], "needs the uri"),
        (actions.EXPLAIN, [{"uri": URI, "range": "nonsense"}], "range must be an LSP range"),
        (
            actions.FIX,
            [{"uri": URI, "range": actions._range_json(lsp_range(0, 0, 0, 1))}],
            "needs the diagnostic",
        ),
        (actions.CHAT, [{"message": "  "}], "needs a message"),
        (actions.ASK, [{}], "needs a question"),
        (actions.EXPLAIN, [{"uri": URI, "voters": 0}], "voters must be an integer from 1 to 64"),
        (actions.EXPLAIN, [{"uri": URI, "strategy": "loudest"}], "strategy must be one of"),
        (actions.CHAT, [{"message": "hi", "conversationId": 5}], "conversationId must be a string"),
    ],
)
def test_bad_command_arguments_say_what_is_wrong(command: str, arguments: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        actions.parse_request(command, arguments)


def test_codebase_requests_are_checked() -> None:
    with pytest.raises(ValueError, match="needs an instruction"):
        actions.parse_codebase_request(actions.REFACTOR_CODEBASE, [{}])
    with pytest.raises(ValueError, match="maxTargets must be an integer from 1 to 20"):
        actions.parse_codebase_request(actions.REFACTOR_CODEBASE, [{"instruction": "x", "maxTargets": 99}])
    request = actions.explain_codebase_request([])
    assert request.kind == "ask" and "organised" in request.prompt


# ---------------------------------------------------------------------------------- tasks and edits

CODE = """def add(a, b):
    return a + b


def greet(name):
    message = "héllo 😀 " + name
    return message
"""


def make_target(tmp_path: Path, text: str = CODE, version: int | None = 4) -> Target:
    folder = Folder(from_fs_path(str(tmp_path)), tmp_path)
    document = Document.from_text(from_fs_path(str(tmp_path / "pkg/util.py")), text, version)
    return Target(folder, document.uri, "pkg/util.py", document)


def test_a_cursor_means_the_definition_around_it_and_a_fix_whole_lines(tmp_path: Path) -> None:
    target = make_target(tmp_path)
    cursor = actions.parse_request(
        actions.DOCUMENT, [{"uri": target.uri, "range": actions._range_json(lsp_range(5, 6, 5, 6))}]
    )
    task = actions.build_task(cursor, target)
    assert task.range == TextRange(5, 7)
    assert task.selection_text() == 'def greet(name):\n    message = "héllo 😀 " + name\n    return message'
    fix = actions.parse_request(
        actions.FIX,
        [
            {
                "uri": target.uri,
                "range": actions._range_json(lsp_range(1, 11, 1, 12)),
                "diagnostic": {"message": "m", "code": "E1"},
            }
        ],
    )
    fix_task = actions.build_task(fix, target)
    assert fix_task.range == TextRange(2, 2) and fix_task.diagnostic == "m [E1]"
    ask = actions.parse_request(
        actions.ASK, [{"uri": target.uri, "range": actions._range_json(lsp_range(1, 3, 1, 3))}]
    )
    assert actions.build_task(ask, target).range is None


def test_an_action_listed_for_an_older_buffer_version_is_refused(tmp_path: Path) -> None:
    target = make_target(tmp_path, version=5)
    listed = actions.list_actions(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=target.uri),
            range=lsp_range(0, 0, 2, 0),
            context=types.CodeActionContext(diagnostics=[]),
        ),
        resolve=True,
        version=4,
    )
    request = actions.resolve_request(next(a for a in listed if a.title == "Explain").data)
    with pytest.raises(actions.ContentModified, match="changed since the code actions were listed"):
        actions.build_task(request, target)


def test_workspace_edits_use_the_client_units_and_refuse_stale_edits(tmp_path: Path) -> None:
    target = make_target(tmp_path)
    document = target.document
    line = 'message = "héllo 😀 " + name'
    edit = Edit("pkg/util.py", TextRange(6, 6, 4, None), 'message = "hi " + name', line)
    made = workspace_edit([edit], lambda path: document, versioned=True)
    (change,) = made.document_changes
    assert change.text_document.version == 4
    (text_edit,) = change.edits
    assert text_edit.range == lsp_range(5, 4, 5, 4 + len(line.encode("utf-16-le")) // 2)
    plain = workspace_edit([edit], lambda path: document, versioned=False)
    assert list(plain.changes) == [document.uri]
    document.apply_change(change_line(document, 5, "    message = 'typed meanwhile'"), 5)
    with pytest.raises(StaleEdit, match="changed at line 6 since the edit was made"):
        workspace_edit([edit], lambda path: document, versioned=True)


def change_line(document: Document, row: int, text: str) -> types.TextDocumentContentChangeEvent:
    end = to_client_units(document.lines[row], len(document.lines[row]), document.encoding)
    return types.TextDocumentContentChangePartial(range=lsp_range(row, 0, row, end), text=text)


def test_editor_options_merge_section_by_section() -> None:
    merged = merge_options(
        {"swarm": {"voters": 3, "max_tokens": 64}}, {"swarm": {"voters": 5}, "index": {"watch": False}}
    )
    assert merged == {"swarm": {"voters": 5, "max_tokens": 64}, "index": {"watch": False}}


# --------------------------------------------------------------------------------- codebase planning


def test_codebase_planning_skips_overlaps_and_stale_index_entries(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg/totals.py").write_text(
        "def total(items):\n    result = 0\n    for item in items:\n        result = result + item\n    return result\n"
    )
    (root / "pkg/more.py").write_text("def total_price(prices):\n    return sum(prices)  # total\n")
    loaded = load_settings(
        root,
        {"index": {"location": str(tmp_path / "data"), "embedder": "none"}},
        env={},
        user_file=tmp_path / "none.toml",
    )
    with Workspace(root, loaded=loaded) as workspace:
        workspace.index(embed=False)
        texts = {path: (root / path).read_text() for path in ("pkg/totals.py", "pkg/more.py")}
        targets, skipped = plan_targets(workspace, "total", texts.get, max_targets=5)
        assert {t.path for t in targets} == {"pkg/totals.py", "pkg/more.py"}
        for a in targets:
            for b in targets:
                if a is not b and a.path == b.path:
                    assert a.range.end_line < b.range.start_line or b.range.end_line < a.range.start_line
        assert skipped == []
        # The buffer has moved the function down two lines: the index no longer matches it.
        texts["pkg/totals.py"] = "# new header\n\n" + texts["pkg/totals.py"]
        targets, skipped = plan_targets(workspace, "total", texts.get, max_targets=5)
        assert [t.path for t in targets] == ["pkg/more.py"]
        assert skipped and "out of date" in skipped[0] and skipped[0].startswith("pkg/totals.py:")


def test_unsaved_buffers_of_ignored_files_stay_out_of_the_index(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "build").mkdir(parents=True)
    (root / ".gitignore").write_text("build/\n")
    (root / "main.py").write_text("def main():\n    return 1\n")
    loaded = load_settings(
        root,
        {"index": {"location": str(tmp_path / "data"), "embedder": "none"}},
        env={},
        user_file=tmp_path / "none.toml",
    )
    with Workspace(root, loaded=loaded) as workspace:
        workspace.index(embed=False)
        assert workspace.update_buffer("main.py", "def main():\n    return unsaved_marker_xyz\n") is True
        assert workspace.update_buffer("build/out.py", "def generated_marker_xyz():\n    pass\n") is False
        assert workspace.update_buffer(".env", "API_TOKEN=sk-live-4242\n") is False
        assert [hit.path for hit in workspace.search("unsaved_marker_xyz", mode="fts")] == ["main.py"]
        assert all(hit.path != "build/out.py" for hit in workspace.search("generated_marker_xyz", mode="fts"))


# ----------------------------------------------------------------------------------------- serving


def test_addresses_must_be_loopback() -> None:
    assert parse_address("127.0.0.1:2087") == ("127.0.0.1", 2087)
    assert parse_address("[::1]:2087") == ("::1", 2087)
    assert parse_address("localhost:9") == ("localhost", 9)
    for bad, message in [
        ("0.0.0.0:2087", "loopback"),
        ("example.com:1", "loopback"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:0", "1 to 65535"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_address(bad)


def test_serve_refuses_a_public_address() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "serve", "--tcp", "0.0.0.0:2087"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return f"Content-Length: {len(body)}\r\n\r\n".encode() + body


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"processId": None, "rootUri": None, "capabilities": {}},
}


def start_server(*args: str) -> subprocess.Popen:
    env = {**os.environ, "SWARM_LSP_CONFIG_FILE": "/nonexistent/swarm-lsp.toml"}
    return subprocess.Popen(
        [sys.executable, "-m", "swarm_lsp", "serve", *args], env=env, stderr=subprocess.PIPE
    )


async def connect_when_listening(port: int, server: subprocess.Popen, opener):
    """Connect as soon as the server listens (pygls serves one connection and then stops, so the
    first connection must be the real one)."""
    for _ in range(300):
        assert server.poll() is None, server.stderr.read().decode()
        try:
            return await opener()
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


async def test_tcp_transport_answers_initialize() -> None:
    port = free_port()
    server = start_server("--tcp", f"127.0.0.1:{port}")
    try:
        reader, writer = await connect_when_listening(
            port, server, lambda: asyncio.open_connection("127.0.0.1", port)
        )
        writer.write(frame(INITIALIZE))
        await writer.drain()
        header = await reader.readuntil(b"\r\n\r\n")
        length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
        assert reply["id"] == 1
        assert reply["result"]["serverInfo"]["name"] == "swarm-lsp"
        assert actions.EXPLAIN in reply["result"]["capabilities"]["executeCommandProvider"]["commands"]
        writer.close()
    finally:
        server.kill()
        server.wait()


async def test_websocket_transport_answers_initialize() -> None:
    from websockets.asyncio.client import connect

    port = free_port()
    server = start_server("--ws", f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        websocket = await connect_when_listening(port, server, lambda: connect(f"ws://127.0.0.1:{port}"))
        async with websocket:
            await websocket.send(json.dumps(INITIALIZE))
            while time.monotonic() < deadline:
                reply = json.loads(await asyncio.wait_for(websocket.recv(), 30))
                if reply.get("id") == 1:
                    break
        assert reply["result"]["capabilities"]["codeActionProvider"]["resolveProvider"] is True
    finally:
        server.kill()
        server.wait()


def test_sources_link_to_their_file_and_line_from_the_answer_documents() -> None:
    links = SourceLinks(Path("/work/repo"), Path("/cache/swarm-lsp/repo-1a2b/answers"))
    assert (
        links.markdown("pkg/util.py:10-14") == "[`pkg/util.py:10-14`](../../../../work/repo/pkg/util.py#L10)"
    )
    assert links.markdown("README.md:3") == "[`README.md:3`](../../../../work/repo/README.md#L3)"
    assert (
        links.markdown("pkg/util.py (outline)")
        == "[`pkg/util.py (outline)`](../../../../work/repo/pkg/util.py)"
    )
    assert links.markdown("my notes.md:2").endswith("(../../../../work/repo/my%20notes.md#L2)")
