""" "Allow for this session": the MCP SDK's own client answers an approval with the session checkbox,
in both protocol eras, against the real server (in-process, and one `swarm-lsp mcp --http` process
for HTTP sessions): the same tool at the same tier is then not asked again, a different tool or a
destructive call still is, a new session asks again, a deny rule still wins, and a client that
answers only the old `approve` field gets one call."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from server_processes import serving
from test_mcp_support import FILES, Bench, Elicitor, audit, connect, text, write_tree

from swarm_lsp.mcp.server import SESSION_FIELD

SWARM_LSP = str(Path(sys.executable).with_name("swarm-lsp"))


class SessionUser(Elicitor):
    """Accepts every prompt; ticks "don't ask again this session" when it is offered and `remember`."""

    def __init__(self, remember: bool = True) -> None:
        super().__init__("accept")
        self.remember = remember
        self.offered: list[bool] = []

    async def __call__(self, context: Any, params: Any) -> types.ElicitResult:
        self.messages.append(params.message)
        offered = SESSION_FIELD in params.requested_schema.get("properties", {})
        self.offered.append(offered)
        content: dict[str, Any] = {"approve": True}
        if offered and self.remember:
            content[SESSION_FIELD] = True
        return types.ElicitResult(action="accept", content=content)


@pytest.fixture
async def bench(tmp_path):
    made = Bench(tmp_path)
    yield made
    await made.aclose()


def _decisions(toolbox: Any, tool: str) -> list[str | None]:
    return [entry["decided_by"] for entry in audit(toolbox) if entry["tool"] == tool]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_allowed_for_the_session_the_same_tool_is_not_asked_again_but_another_is(bench, mode):
    toolbox = bench.toolbox()
    root = toolbox.workspace.root
    user = SessionUser()
    async with connect(toolbox, mode=mode, elicit=user) as client:
        first = await client.call_tool(
            "edit_file", {"path": "notes.txt", "old_text": "line 1\n", "new_text": "a\n"}
        )
        second = await client.call_tool(
            "edit_file", {"path": "README.md", "old_text": "Tiny", "new_text": "Small"}
        )
        created = await client.call_tool("write_file", {"path": "new.txt", "content": "x\n"})
    assert not first.is_error and not second.is_error and not created.is_error, text(first) + text(second)
    assert (root / "README.md").read_text().startswith("# Small app")
    # Asked for the first edit (with the choice offered and explained) and for write_file, not again.
    assert len(user.messages) == 2 and user.offered == [True, True]
    assert "edit_file" in user.messages[0] and "until this session ends" in user.messages[0]
    assert "write_file" in user.messages[1]
    assert _decisions(toolbox, "edit_file") == ["user_for_session", "session"]
    entry = [e for e in audit(toolbox) if e["tool"] == "edit_file"][-1]
    assert (entry["decision"], entry["rule"]) == ("allow", "tools.write = ask")


async def test_a_destructive_call_is_never_allowed_for_the_session(bench):
    toolbox = bench.toolbox()
    user = SessionUser()
    async with connect(toolbox, mode="legacy", elicit=user) as client:
        created = await client.call_tool("write_file", {"path": "a.txt", "content": "1"})
        again = await client.call_tool("write_file", {"path": "b.txt", "content": "2"})
        overwrite = await client.call_tool("write_file", {"path": "a.txt", "content": "3", "overwrite": True})
        overwrite_again = await client.call_tool(
            "write_file", {"path": "b.txt", "content": "4", "overwrite": True}
        )
    assert not any(result.is_error for result in (created, again, overwrite, overwrite_again))
    # The create was allowed for the session; each overwrite (destructive) was asked, without the choice.
    assert user.offered == [True, False, False]
    assert _decisions(toolbox, "write_file") == ["user_for_session", "session", "user", "user"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_new_session_asks_again(bench, mode):
    toolbox = bench.toolbox()
    first_user, second_user = SessionUser(), SessionUser(remember=False)
    async with connect(toolbox, mode=mode, elicit=first_user) as client:
        await client.call_tool("write_file", {"path": "one.txt", "content": "1"})
        await client.call_tool("write_file", {"path": "two.txt", "content": "2"})
    async with connect(toolbox, mode=mode, elicit=second_user) as client:
        await client.call_tool("write_file", {"path": "three.txt", "content": "3"})
        await client.call_tool("write_file", {"path": "four.txt", "content": "4"})
    assert len(first_user.messages) == 1
    assert len(second_user.messages) == 2, "an allowance must not outlive its session"
    assert _decisions(toolbox, "write_file") == ["user_for_session", "session", "user", "user"]


async def test_a_deny_rule_wins_over_a_session_allowance(bench):
    # A call that reaches a denied tier is refused even though its tool was allowed for the session.
    toolbox = bench.toolbox(execute="ask", destructive="deny")
    user = SessionUser()
    async with connect(toolbox, mode="legacy", elicit=user) as client:
        harmless = await client.call_tool("run_command", {"command": "echo fine"})
        again = await client.call_tool("run_command", {"command": "echo again"})
        wipe = await client.call_tool("run_command", {"command": "rm -rf pkg"})
    assert not harmless.is_error and not again.is_error
    assert wipe.is_error and "denied by the settings (tools.destructive = deny)" in text(wipe)
    assert len(user.messages) == 1 and (toolbox.workspace.root / "pkg").is_dir()
    assert _decisions(toolbox, "run_command") == ["user_for_session", "session", "policy"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_answer_without_the_session_field_approves_one_call(bench, mode):
    toolbox = bench.toolbox()
    user = Elicitor("accept")  # answers the old schema: {"approve": true}
    async with connect(toolbox, mode=mode, elicit=user) as client:
        first = await client.call_tool("write_file", {"path": "one.txt", "content": "1"})
        second = await client.call_tool("write_file", {"path": "two.txt", "content": "2"})
    assert not first.is_error and not second.is_error
    assert len(user.messages) == 2
    assert _decisions(toolbox, "write_file") == ["user", "user"]


async def test_declining_with_the_box_ticked_allows_nothing(bench):
    toolbox = bench.toolbox()

    class Refuser(SessionUser):
        async def __call__(self, context: Any, params: Any) -> types.ElicitResult:
            self.messages.append(params.message)
            return types.ElicitResult(action="accept", content={"approve": False, SESSION_FIELD: True})

    user = Refuser()
    async with connect(toolbox, mode="legacy", elicit=user) as client:
        first = await client.call_tool("write_file", {"path": "one.txt", "content": "1"})
        second = await client.call_tool("write_file", {"path": "two.txt", "content": "2"})
    assert first.is_error and second.is_error and len(user.messages) == 2
    assert not (toolbox.workspace.root / "one.txt").exists()


# ------------------------------------------------------------------------------------------- http


@pytest.mark.slow
async def test_over_http_the_allowance_belongs_to_one_session(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    write_tree(root, FILES)
    env = dict(
        os.environ,
        SWARM_LSP_CONFIG_FILE=str(tmp_path / "none.toml"),
        SWARM_LSP_CACHE_DIR=str(tmp_path / "cache"),
        SWARM_LSP_INDEX__EMBEDDER="none",
    )
    command = [SWARM_LSP, "mcp", "--http", "--tool-port", "0", "-w", str(root)]
    with serving(command, env, "MCP server at", timeout=60) as server:
        first_user, second_user, stateless_user = SessionUser(), SessionUser(), SessionUser()
        async with Client(server.url, mode="legacy", elicitation_callback=first_user) as client:
            one = await client.call_tool("write_file", {"path": "one.txt", "content": "1"})
            two = await client.call_tool("write_file", {"path": "two.txt", "content": "2"})
        async with Client(server.url, mode="legacy", elicitation_callback=second_user) as client:
            three = await client.call_tool("write_file", {"path": "three.txt", "content": "3"})
        async with Client(server.url, mode="auto", elicitation_callback=stateless_user) as client:
            four = await client.call_tool("write_file", {"path": "four.txt", "content": "4"})
            five = await client.call_tool("write_file", {"path": "five.txt", "content": "5"})
    assert not any(result.is_error for result in (one, two, three, four, five))
    assert first_user.offered == [True], "the second call of the session must not be asked"
    assert second_user.offered == [True], "another session must be asked"
    # 2026-07-28 HTTP has no session: the choice is not offered, and each call is asked.
    assert stateless_user.offered == [False, False]
