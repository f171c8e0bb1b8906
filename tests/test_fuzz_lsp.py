"""Fuzzing `swarm-lsp serve`, the real process over stdio, with JSON-RPC framed by hand.

hypothesis generates runs of messages: the server's own methods with params mutated (wrong types,
missing and extra fields, huge strings, positions inside a surrogate pair or far past the end,
ranges that end before they start, text with lone "\\r" line breaks), methods nobody serves,
notifications, and bodies that are not JSON-RPC at all (invalid JSON, arrays, nesting thousands
deep). Properties, checked after every run:

- every request with an id gets exactly one response with that id, holding `result` or an `error`
  whose code is a JSON-RPC or LSP error code and whose message is a string;
- a body that is not JSON-RPC is answered as JSON-RPC says (ParseError or InvalidRequest, id null
  when the id is unusable), and stdout carries nothing but framed messages;
- the process is alive, a valid request sent after the run answers, and every workspace folder it
  serves is one the editor named by an absolute path;
- memory stays bounded: RSS after all runs is within a generous bound of RSS before.

In process, the buffers themselves: whatever line breaks a text and its incremental edits hold
("\\n", "\\r\\n", a lone "\\r"), the server's lines are the editor's (LSP counts all three).

Nothing here runs the model: code action resolves and commands that would generate get only data
the server must refuse before it gets that far (the index is full text, no embedder).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fuzz_support import deep_json, fuzz_settings, huge_strings, integers_at_the_edges, json_values
from fuzz_support import nasty_strings as nasty
from hypothesis import example, given
from hypothesis import strategies as st
from lsp_raw_client import RawServer
from lsprotocol import types

from swarm_lsp.lsp.documents import UTF16, Document

pytestmark = pytest.mark.slow

RSS_GROWTH_LIMIT_KB = 400_000
"""RSS may grow this much over the whole fuzz run (buffers of up to a megabyte are opened, and
Python keeps freed memory); a leak per message would pass it within the long run."""
ERROR_CODES = frozenset(
    {-32700, -32600, -32601, -32602, -32603, -32002, -32001, -32800, -32801, -32802, -32803}
)
"""JSON-RPC's codes and LSP's; -32099..-32000 are the JSON-RPC server error range too."""

UTIL = "def add(a, b):\n    return a + b\n\n\ndef greet(name):\n    return 'héllo 😀 ' + name\n"
FILES = {"pkg/util.py": UTIL, "README.md": "# tiny\n\nadd and greet.\n", "notes.txt": "one\rtwo\rthree\n"}
MODEL_ACTIONS = ("explain", "document", "fix")
"""Resolving these runs the model: the fuzzer never sends them as a valid action."""
SAFE_COMMANDS = ("swarm.status", "swarm.reindex", "swarm.nonexistent", "", "swarm.")
TASK_COMMANDS = ("swarm.explain", "swarm.refactor", "swarm.document", "swarm.fix", "swarm.ask", "swarm.chat")


def is_spec_error_code(code: Any) -> bool:
    return (
        isinstance(code, int)
        and not isinstance(code, bool)
        and (code in ERROR_CODES or -32099 <= code <= -32000)
    )


def uri(root: Path, rel: str) -> str:
    return (root / rel).as_uri()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("repo")
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, newline="")
    made = RawServer(root, tmp_path_factory.mktemp("data"))
    folder = {"uri": root.as_uri(), "name": "repo"}
    init = made.call(
        "initialize",
        {"processId": None, "rootUri": root.as_uri(), "capabilities": {}, "workspaceFolders": [folder]},
    )
    assert "result" in init, init
    made.notify("initialized", {})
    made.baseline_kb = made.rss_kb()
    yield made
    made.close()


# ----------------------------------------------------------------------------------- strategies


def positions(lines: int = 8) -> st.SearchStrategy[Any]:
    """LSP positions: inside the text, past its end, inside a surrogate pair, negative, wrong types."""
    number = st.one_of(st.integers(0, lines), integers_at_the_edges())
    valid = st.fixed_dictionaries({"line": number, "character": number})
    return st.one_of(
        valid,
        valid,
        st.fixed_dictionaries({"line": json_values(), "character": json_values()}),
        st.fixed_dictionaries({"line": number}),
        json_values(),
    )


def ranges() -> st.SearchStrategy[Any]:
    return st.one_of(st.fixed_dictionaries({"start": positions(), "end": positions()}), json_values())


def texts() -> st.SearchStrategy[str]:
    return st.one_of(
        nasty(200),
        st.sampled_from([UTIL, UTIL.replace("\n", "\r"), UTIL.replace("\n", "\r\n"), "😀" * 50 + "\r\n\r"]),
        huge_strings(),
    )


def documents(root: Path) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([uri(root, "pkg/util.py"), uri(root, "notes.txt"), uri(root, "new/buffer.py")]),
        st.sampled_from(
            ["untitled:Untitled-1", "file:///", "file:///etc/passwd", "http://x/y.py", "", "file://"]
        ),
        nasty(),
    )


def folder_uris(root: Path) -> st.SearchStrategy[str]:
    """Workspace folders an editor might add: real, missing, a file, relative or empty paths, not URIs.
    Never the file system's root (that would index it all: a real request, but not a fuzz case)."""
    return st.one_of(
        st.sampled_from(
            [
                root.as_uri(),
                uri(root, "pkg"),
                uri(root, "missing-folder"),
                uri(root, "pkg/util.py"),
                "file://",
                "file:relative/folder",
                "file:.",
                "untitled:folder",
            ]
        ),
        nasty().filter(lambda text: not text.startswith("file:")),
    )


def with_mutations(params: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Params as generated, or with a key dropped, a key added, a value of any type, or not an object."""

    def mutate(value: dict[str, Any], how: int, key: str, junk: Any) -> Any:
        changed = dict(value)
        if how == 0 and changed:
            changed.pop(sorted(changed)[len(key) % len(changed)])
        elif how == 1:
            changed[key] = junk
        elif how == 2 and changed:
            changed[sorted(changed)[len(key) % len(changed)]] = junk
        elif how == 3:
            return junk
        return changed

    return st.one_of(params, st.builds(mutate, params, st.integers(0, 3), nasty(10), json_values()))


def lsp_messages(root: Path) -> st.SearchStrategy[tuple[str, str, Any]]:
    """(kind, method, params): kind is "request" or "notify"."""
    document = st.fixed_dictionaries({"uri": documents(root)})
    opened = st.fixed_dictionaries(
        {
            "textDocument": st.fixed_dictionaries(
                {
                    "uri": documents(root),
                    "languageId": st.sampled_from(["python", "markdown", "", "brainfuck"]),
                    "version": integers_at_the_edges(),
                    "text": texts(),
                }
            )
        }
    )
    change = st.one_of(
        st.fixed_dictionaries({"range": ranges(), "text": texts()}),
        st.fixed_dictionaries({"text": texts()}),
        st.fixed_dictionaries({"range": ranges(), "rangeLength": integers_at_the_edges(), "text": nasty()}),
    )
    changed = st.fixed_dictionaries(
        {
            "textDocument": st.fixed_dictionaries(
                {"uri": documents(root), "version": integers_at_the_edges()}
            ),
            "contentChanges": st.lists(change, max_size=4),
        }
    )
    action_data = st.one_of(
        st.fixed_dictionaries(
            {
                "action": st.sampled_from(["refactor", "ask", "summon", "", "EXPLAIN"]),
                "uri": documents(root),
                "range": ranges(),
                "version": json_values(),
            }
        ),
        st.fixed_dictionaries(
            {"action": st.sampled_from(MODEL_ACTIONS), "uri": json_values(), "range": json_values()}
        ).filter(lambda data: not isinstance(data["uri"], str)),
        json_values(),
    )
    code_action = st.fixed_dictionaries(
        {
            "textDocument": document,
            "range": ranges(),
            "context": st.one_of(
                st.fixed_dictionaries(
                    {
                        "diagnostics": st.lists(
                            st.fixed_dictionaries({"range": ranges(), "message": texts()}), max_size=3
                        ),
                        "only": st.lists(nasty(20), max_size=3),
                    }
                ),
                json_values(),
            ),
        }
    )
    commands = st.one_of(
        st.fixed_dictionaries(
            {"command": st.sampled_from(SAFE_COMMANDS), "arguments": st.lists(json_values(), max_size=3)}
        ),
        # Task commands only with arguments that are not one object: refused before any model call.
        st.fixed_dictionaries(
            {
                "command": st.sampled_from(TASK_COMMANDS),
                "arguments": st.lists(json_values().filter(lambda v: not isinstance(v, dict)), max_size=3),
            }
        ),
    )
    requests = st.one_of(
        st.tuples(st.just("request"), st.just("textDocument/codeAction"), with_mutations(code_action)),
        st.tuples(
            st.just("request"),
            st.just("codeAction/resolve"),
            with_mutations(st.fixed_dictionaries({"title": nasty(), "data": action_data})),
        ),
        st.tuples(st.just("request"), st.just("workspace/executeCommand"), with_mutations(commands)),
        st.tuples(
            st.just("request"),
            st.sampled_from(
                ["textDocument/hover", "textDocument/definition", "swarm/unknown", "", "$/unknown"]
            ),
            json_values(),
        ),
        # Inline completion would run the model: only with params that cannot be a valid request.
        st.tuples(
            st.just("request"),
            st.just("textDocument/inlineCompletion"),
            st.fixed_dictionaries({"textDocument": json_values(), "position": json_values()}),
        ),
        st.tuples(
            st.just("request"), st.just("initialize"), json_values().filter(lambda v: not isinstance(v, dict))
        ),
    )
    notifications = st.one_of(
        st.tuples(st.just("notify"), st.just("textDocument/didOpen"), with_mutations(opened)),
        st.tuples(st.just("notify"), st.just("textDocument/didChange"), with_mutations(changed)),
        st.tuples(
            st.just("notify"),
            st.just("textDocument/didClose"),
            with_mutations(st.fixed_dictionaries({"textDocument": document})),
        ),
        st.tuples(
            st.just("notify"),
            st.just("textDocument/didSave"),
            with_mutations(st.fixed_dictionaries({"textDocument": document})),
        ),
        st.tuples(
            st.just("notify"), st.just("$/cancelRequest"), st.fixed_dictionaries({"id": json_values()})
        ),
        st.tuples(
            st.just("notify"),
            st.just("window/workDoneProgress/cancel"),
            st.fixed_dictionaries({"token": json_values()}),
        ),
        st.tuples(
            st.just("notify"),
            st.just("workspace/didChangeConfiguration"),
            st.fixed_dictionaries(
                {"settings": st.one_of(json_values(), st.fixed_dictionaries({"swarm-lsp": json_values()}))}
            ),
        ),
        st.tuples(
            st.just("notify"),
            st.just("workspace/didChangeWorkspaceFolders"),
            st.fixed_dictionaries(
                {
                    "event": st.fixed_dictionaries(
                        {
                            "added": st.lists(
                                st.fixed_dictionaries({"uri": folder_uris(root), "name": nasty()}), max_size=2
                            ),
                            "removed": st.lists(
                                st.fixed_dictionaries({"uri": folder_uris(root), "name": nasty()}), max_size=2
                            ),
                        }
                    )
                }
            ),
        ),
        st.tuples(
            st.just("notify"), st.sampled_from(["swarm/unknown", "$/setTrace", "exitt", ""]), json_values()
        ),
    )
    return st.one_of(requests, notifications)


GARBAGE_BODIES = st.one_of(
    st.sampled_from(
        [
            b"{not json",
            b"",
            b"null",
            b"[]",
            b'"a string"',
            b"\xff\xfe\x00garbage",
            b'{"jsonrpc": "2.0"}',
            b'{"jsonrpc": "1.0", "id": 1, "method": "shutdown"}',
            b'{"id": 1, "method": "$/unknown"}',
            b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "$/unknown"}',
            b'{"jsonrpc": "2.0", "id": 1.5, "result": null}',
            b'{"jsonrpc": "2.0", "method": 42}',
            b'[{"jsonrpc": "2.0", "id": 1, "method": "$/unknown"}, {"jsonrpc": "2.0", "method": "x"}]',
        ]
    ),
    st.binary(max_size=200),
    st.builds(lambda depth: deep_json(depth).encode(), st.integers(100, 100_000)),
    st.builds(lambda value: json.dumps(value).encode(), json_values()),
)
"""Bodies that are not a JSON-RPC message (framed correctly, so the stream stays in step)."""


@st.composite
def runs(draw: st.DrawFn, root: Path) -> list[tuple[str, str, Any]]:
    """A run: a few messages, sometimes garbage bodies or odd headers between them."""
    steps = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 5)) == 0:
            steps.append(
                (
                    "garbage",
                    draw(st.sampled_from(["", "Content-Type: application/x-junk\r\n", "X-Y: z\r\n"])),
                    draw(GARBAGE_BODIES),
                )
            )
        else:
            steps.append(draw(lsp_messages(root)))
    return steps


# ---------------------------------------------------------------------------------------- tests

ROOT_PLACEHOLDER = Path("/nonexistent-fuzz-root")
"""The strategies are built for a root before the fixture makes one; URIs use this, then are moved."""


def _rebase(value: Any, root: Path) -> Any:
    if isinstance(value, str):
        return value.replace(ROOT_PLACEHOLDER.as_uri(), root.as_uri())
    if isinstance(value, list | tuple):
        return type(value)(_rebase(item, root) for item in value)
    if isinstance(value, dict):
        return {key: _rebase(item, root) for key, item in value.items()}
    return value


def check_response(msg_id: Any, responses: list[dict[str, Any]], method: str) -> None:
    assert len(responses) == 1, f"{method}: {len(responses)} responses to id {msg_id!r}: {responses}"
    (response,) = responses
    assert response.get("jsonrpc") == "2.0", response
    assert ("result" in response) != ("error" in response), f"{method}: {response}"
    if "error" in response:
        error = response["error"]
        assert is_spec_error_code(error.get("code")), f"{method}: not a JSON-RPC error code: {error}"
        assert isinstance(error.get("message"), str) and error["message"], f"{method}: {error}"


def still_serving(server: RawServer) -> None:
    assert server.process.poll() is None, f"the server exited:\n{server.log()}"
    assert not server.unframed, f"stdout carried something else than messages: {server.unframed[:3]}"
    status = server.call("workspace/executeCommand", {"command": "swarm.status", "arguments": []})
    assert "result" in status, status
    roots = [Path(folder["root"]) for folder in status["result"]["folders"]]
    for root in roots:  # only folders the editor named, by absolute paths
        assert root.is_relative_to(server.root), f"a workspace folder outside the test's: {root}"
    if server.root not in roots:  # the run removed it: add it back for the next one
        added = {"added": [{"uri": server.root.as_uri(), "name": "repo"}], "removed": []}
        server.notify("workspace/didChangeWorkspaceFolders", {"event": added})
    listed = server.call(
        "textDocument/codeAction",
        {
            "textDocument": {"uri": uri(server.root, "pkg/util.py")},
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}},
            "context": {"diagnostics": []},
        },
    )
    assert any(action["title"] == "Explain" for action in listed["result"]), listed


@example(
    [
        (
            "notify",
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": ROOT_PLACEHOLDER.as_uri() + "/notes.txt",
                    "languageId": "text",
                    "version": 1,
                    "text": "a\rb\rc",
                }
            },
        ),
        (
            "notify",
            "textDocument/didChange",
            {
                "textDocument": {"uri": ROOT_PLACEHOLDER.as_uri() + "/notes.txt", "version": 2},
                "contentChanges": [
                    {
                        "range": {"start": {"line": 2, "character": 0}, "end": {"line": 2, "character": 1}},
                        "text": "C",
                    }
                ],
            },
        ),
        (
            "request",
            "textDocument/codeAction",
            {
                "textDocument": {"uri": ROOT_PLACEHOLDER.as_uri() + "/notes.txt"},
                "range": {"start": {"line": 9, "character": 2**31 - 1}, "end": {"line": 0, "character": 0}},
                "context": {"diagnostics": []},
            },
        ),
    ]
)
@given(steps=runs(ROOT_PLACEHOLDER))
@fuzz_settings(120)
def test_every_request_is_answered_and_the_server_stays_up(server: RawServer, steps) -> None:
    waiting: list[tuple[Any, str]] = []
    for kind, method, params in _rebase(steps, server.root):
        if kind == "garbage":
            server.frame(params, headers=method)
        elif kind == "request":
            waiting.append((server.request(method, params), method))
        else:
            server.notify(method, params)
    for msg_id, method in waiting:
        check_response(msg_id, server.answer(msg_id), method)
    still_serving(server)


@pytest.mark.parametrize(
    ("body", "code", "answered_id"),
    [
        (b"{not json", -32700, None),
        (b"\xff\xfe not utf-8", -32700, None),
        (deep_json(100_000).encode(), -32700, None),
        (b"[]", -32600, None),
        (b'[{"jsonrpc": "2.0", "id": 901, "method": "shutdown"}]', -32600, None),
        (b"42", -32600, None),
        (b'{"id": 902, "method": "$/unknown"}', -32600, 902),
        (b'{"jsonrpc": "1.0", "id": 903, "method": "shutdown"}', -32600, 903),
        (b'{"jsonrpc": "2.0", "id": {"nested": 1}, "method": "$/unknown"}', -32600, None),
        (b'{"jsonrpc": "2.0", "id": true, "method": "$/unknown"}', -32600, None),
    ],
)
def test_bodies_that_are_not_jsonrpc_are_answered_as_jsonrpc_says(
    server: RawServer, body, code, answered_id
) -> None:
    before = len(server.responses_to(None))
    server.frame(body)
    answers = server.answer(answered_id) if answered_id is not None else server.wait_for_more(None, before)
    assert [answer["error"]["code"] for answer in answers] == [code], answers
    assert answers[0]["error"]["message"], answers
    still_serving(server)


def test_ids_of_every_json_type_are_answered_with_the_same_id(server: RawServer) -> None:
    for msg_id in ("text-id", 0, -1, 2**53, "😀", ""):
        responses = server.answer(server.request("$/unknownRequest", {}, msg_id=msg_id))
        check_response(msg_id, responses, "$/unknownRequest")
        assert responses[0]["error"]["code"] == -32601
    still_serving(server)


def test_memory_stays_bounded_after_the_fuzzing(server: RawServer) -> None:
    """Runs after the fuzzer in this module (pytest keeps file order): RSS after it vs. at start."""
    for _ in range(3):
        server.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri(server.root, "big.py"),
                    "languageId": "python",
                    "version": 1,
                    "text": "x" * 1_000_000,
                }
            },
        )
        server.notify("textDocument/didClose", {"textDocument": {"uri": uri(server.root, "big.py")}})
    still_serving(server)
    grown = server.rss_kb() - server.baseline_kb
    assert grown < RSS_GROWTH_LIMIT_KB, f"RSS grew by {grown} kB (from {server.baseline_kb} kB)"


# ------------------------------------------------------------------ buffers, in process

LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lsp_lines(text: str) -> list[str]:
    """The lines of `text` as LSP counts them: "\n", "\r\n" and a lone "\r" each end a line."""
    return LINE_BREAK.split(text)


def lsp_offset(text: str, line: int, character: int) -> int:
    """The offset of a UTF-16 position in `text` (clamped), written apart from the server's."""
    starts = [0, *(match.end() for match in LINE_BREAK.finditer(text))]
    if line >= len(starts):
        return len(text)
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    content = LINE_BREAK.sub("", text[starts[line] : end])
    units = index = 0
    while index < len(content) and units + (width := 2 if ord(content[index]) > 0xFFFF else 1) <= character:
        units, index = units + width, index + 1  # inside a surrogate pair rounds down, as the server does
    return starts[line] + index


def pieces(alphabet: list[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(alphabet), max_size=max_size).map("".join)


EDIT_TEXT = pieces(["a", "é", "😀", "\n", "\r", "\r\n"], 6)


@given(
    text=pieces(["a", "b", "😀", "\n", "\r", "\r\n", "\u2028", "\x0c"], 30),
    edits=st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 8), st.integers(0, 8), EDIT_TEXT),
        max_size=6,
    ),
)
@example(text="a\rb\rc", edits=[(2, 0, 2, 1, "C")])
@example(text="ab\r\ncd", edits=[(0, 2, 0, 2, "\r")])
@fuzz_settings(400)
def test_buffers_split_lines_as_lsp_does_through_any_edits(text: str, edits) -> None:
    """An editor and the server agree on every line, whatever line breaks the text and the edits hold."""
    document = Document.from_text("file:///x.py", text, 1, UTF16)
    assert [line.removesuffix("\r") for line in document.lines] == lsp_lines(text)
    for version, (l1, c1, l2, c2, new) in enumerate(edits, 2):
        start, end = sorted([lsp_offset(text, l1, c1), lsp_offset(text, l2, c2)])
        first, last = sorted([(l1, c1), (l2, c2)], key=lambda p: lsp_offset(text, *p))
        rng = types.Range(types.Position(*first), types.Position(*last))
        document.apply_change(types.TextDocumentContentChangePartial(range=rng, text=new), version)
        text = text[:start] + new + text[end:]
        assert [line.removesuffix("\r") for line in document.lines] == lsp_lines(text), (text, document.lines)
