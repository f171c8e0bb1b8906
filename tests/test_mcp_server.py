"""The MCP server through the SDK's own client, in-process: every non-model tool, each policy outcome
in both protocol eras, read_only mode, client roots, the cache, resources, progress streaming, 50
concurrent calls and the audit log they leave. The swarm tools (which load the model) are in
test_mcp_swarm.py; the stdio and HTTP transports in test_mcp_transports.py."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from test_mcp_support import FILES, Bench, Elicitor, audit, connect, text
from waiting import wait_until_async

READ_TOOLS = {
    "read_file",
    "list_dir",
    "search_code",
    "find_symbol",
    "get_outline",
    "repo_map",
    "index_status",
    "ask_swarm",
    "explain_code",
    "propose_refactor",
}
ALL_TOOLS = READ_TOOLS | {"write_file", "edit_file", "apply_patch", "delete_file", "run_command"}


@pytest.fixture
async def bench(tmp_path):
    made = Bench(tmp_path)
    yield made
    await made.aclose()


# ------------------------------------------------------------------------------------ listing


async def test_tools_are_listed_with_schemas_and_annotations_from_their_tier(bench):
    async with connect(bench.toolbox()) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == ALL_TOOLS
    for name, tool in listed.items():
        assert tool.input_schema["type"] == "object", name
        assert tool.description, name
        hints = tool.annotations
        assert hints.open_world_hint is False, name
        assert hints.read_only_hint is (name in READ_TOOLS), name
        assert hints.idempotent_hint is (name in READ_TOOLS), name
    destructive = {name for name, tool in listed.items() if tool.annotations.destructive_hint}
    # write_file may overwrite, apply_patch may delete, run_command may match a destructive pattern.
    assert destructive == {"delete_file", "write_file", "apply_patch", "run_command"}


async def test_read_only_mode_lists_and_allows_only_read_tools(bench):
    toolbox = bench.toolbox(read_only=True, write="allow", execute="allow", destructive="allow")
    async with connect(toolbox) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        refused = await client.call_tool("write_file", {"path": "new.txt", "content": "x"})
        command = await client.call_tool("run_command", {"command": "touch made.txt"})
        read = await client.call_tool("read_file", {"path": "README.md"})
    assert names == READ_TOOLS
    assert refused.is_error and "read_only" in text(refused)
    assert command.is_error and "read_only" in text(command)
    assert not (toolbox.workspace.root / "new.txt").exists()
    assert not (toolbox.workspace.root / "made.txt").exists()
    assert not read.is_error and "Tiny app" in text(read)
    denied = [entry for entry in audit(toolbox) if entry["tool"] in ("write_file", "run_command")]
    assert [(e["decision"], e["decided_by"]) for e in denied] == [("deny", "read_only")] * 2


# ---------------------------------------------------------------------------------- read tools


async def test_read_file_whole_range_and_cap(bench):
    toolbox = bench.toolbox(max_read_kb=1)
    async with connect(toolbox) as client:
        whole = await client.call_tool("read_file", {"path": "pkg/greeting.py"})
        lines = await client.call_tool("read_file", {"path": "notes.txt", "start_line": 10, "end_line": 12})
        past = await client.call_tool("read_file", {"path": "notes.txt", "start_line": 500})
        big = "".join(f"row {n:04d} " + "x" * 40 + "\n" for n in range(100))
        (toolbox.workspace.root / "big.txt").write_text(big)
        capped = await client.call_tool("read_file", {"path": "big.txt"})
        binary = toolbox.workspace.root / "blob.dat"
        binary.write_bytes(b"\x00\x01\x02" * 100)
        refused = await client.call_tool("read_file", {"path": "blob.dat"})
        missing = await client.call_tool("read_file", {"path": "nope.py"})
        bad = await client.call_tool("read_file", {"path": "notes.txt", "start_line": 0})
    assert text(whole) == FILES["pkg/greeting.py"]
    assert text(lines) == "line 10\nline 11\nline 12\n"
    assert lines.structured_content["total_lines"] == 100
    assert past.is_error and "100 lines" in text(past)
    assert "[truncated" in text(capped) and "start_line=" in text(capped)
    assert capped.structured_content["truncated"] is True
    assert len(text(capped).encode()) < 1300
    assert refused.is_error and "binary" in text(refused)
    assert missing.is_error and "does not exist" in text(missing)
    assert bad.is_error and "start_line" in text(bad)


async def test_list_dir_hides_secret_files(bench):
    async with connect(bench.toolbox()) as client:
        top = await client.call_tool("list_dir", {})
        deep = await client.call_tool("list_dir", {"path": ".", "depth": 3})
    listed = text(top).splitlines()
    assert "pkg/" in listed and "deploy/" in listed
    assert any(line.startswith("README.md") for line in listed)
    assert not any(".env" in line for line in listed)
    deep_paths = [entry["path"] for entry in deep.structured_content["entries"]]
    assert "pkg/greeting.py" in deep_paths
    assert "deploy/server.pem" not in deep_paths and ".env" not in deep_paths


async def test_index_tools_search_symbols_outline_map_status(bench):
    async with connect(bench.toolbox()) as client:
        search = await client.call_tool("search_code", {"query": "greet", "k": 5})
        secret = await client.call_tool("search_code", {"query": "sk-live-secretvalue1234567890 API_KEY"})
        symbol = await client.call_tool("find_symbol", {"name": "Registry.lookup"})
        unknown = await client.call_tool("find_symbol", {"name": "NoSuchThing"})
        outline = await client.call_tool("get_outline", {"path": "pkg/greeting.py"})
        not_indexed = await client.call_tool("get_outline", {"path": "pkg/missing.py"})
        repo_map = await client.call_tool("repo_map", {"token_budget": 512, "focus": ["pkg/uses.py"]})
        status = await client.call_tool("index_status", {})
    hits = search.structured_content["hits"]
    assert any(hit["path"] == "pkg/greeting.py" and "def greet" in hit["text"] for hit in hits)
    assert "pkg/greeting.py:" in text(search)
    assert all(".env" not in hit["path"] for hit in secret.structured_content["hits"])
    assert "secretvalue" not in text(secret)
    assert symbol.structured_content["symbols"][0]["path"] == "pkg/greeting.py"
    assert symbol.structured_content["symbols"][0]["start_line"] == 12
    assert not unknown.is_error and "no definition" in text(unknown)
    assert "def greet(name)" in text(outline) and "return" not in text(outline)
    assert not_indexed.is_error and "not in the index" in text(not_indexed)
    assert "pkg/greeting.py:" in text(repo_map)
    assert status.structured_content["files"] >= 5
    assert status.structured_content["embedder"] is None


async def test_resources_are_index_status_and_repo_map(bench):
    toolbox = bench.toolbox()
    async with connect(toolbox) as client:
        listed = await client.list_resources()
        status = await client.read_resource("swarm-lsp://index/status")
        repo_map = await client.read_resource("swarm-lsp://repo-map")
    assert {str(resource.uri) for resource in listed.resources} == {
        "swarm-lsp://index/status",
        "swarm-lsp://repo-map",
    }
    assert json.loads(status.contents[0].text)["root"] == str(toolbox.workspace.root)
    assert "pkg/greeting.py:" in repo_map.contents[0].text
    assert {entry["tool"] for entry in audit(toolbox)} >= {"index_status", "repo_map"}


# --------------------------------------------------------------------------------- write tools


async def test_write_tools_change_files_atomically_and_reindex(bench):
    toolbox = bench.toolbox(write="allow", destructive="allow")
    root = toolbox.workspace.root
    patch = (
        "--- a/pkg/greeting.py\n+++ b/pkg/greeting.py\n@@ -5,3 +5,3 @@\n"
        ' def greet(name):\n     """Say hello to someone by name."""\n'
        '-    return f"hello {name}"\n+    return f"good day {name}"\n'
        "--- /dev/null\n+++ b/pkg/extra.py\n@@ -0,0 +1,2 @@\n+def farewell():\n+    return 'bye'\n"
        "--- a/README.md\n+++ /dev/null\n@@ -1,3 +0,0 @@\n-# Tiny app\n-\n-It greets people.\n"
    )
    async with connect(toolbox) as client:
        created = await client.call_tool(
            "write_file", {"path": "docs/new.md", "content": "zebracorn notes\n"}
        )
        exists = await client.call_tool("write_file", {"path": "docs/new.md", "content": "again"})
        overwritten = await client.call_tool(
            "write_file", {"path": "docs/new.md", "content": "rewritten\n", "overwrite": True}
        )
        edited = await client.call_tool(
            "edit_file", {"path": "notes.txt", "old_text": "line 7\n", "new_text": "line seven\n"}
        )
        ambiguous = await client.call_tool(
            "edit_file", {"path": "notes.txt", "old_text": "line 1", "new_text": "x"}
        )
        absent = await client.call_tool(
            "edit_file", {"path": "notes.txt", "old_text": "nope", "new_text": "x"}
        )
        patched = await client.call_tool("apply_patch", {"patch": patch})
        stale = await client.call_tool("apply_patch", {"patch": patch})
        deleted = await client.call_tool("delete_file", {"path": "docs/new.md"})
        found = await client.call_tool("search_code", {"query": "farewell"})
    assert not created.is_error and "created docs/new.md" in text(created)
    assert exists.is_error and "overwrite" in text(exists) and "edit_file" in text(exists)
    assert not overwritten.is_error
    assert not edited.is_error and "+line seven" in text(edited)
    assert "line seven\nline 8\n" in (root / "notes.txt").read_text()
    assert ambiguous.is_error and "occurs" in text(ambiguous) and "lines 1, 10" in text(ambiguous)
    assert absent.is_error and "not found" in text(absent)
    assert not patched.is_error, text(patched)
    assert 'return f"good day {name}"' in (root / "pkg/greeting.py").read_text()
    assert (root / "pkg/extra.py").read_text() == "def farewell():\n    return 'bye'\n"
    assert not (root / "README.md").exists()
    assert stale.is_error and "does not apply" in text(stale)
    assert not deleted.is_error and not (root / "docs/new.md").exists()
    assert found.structured_content["hits"][0]["path"] == "pkg/extra.py"
    assert not list(root.rglob("*.swarm-lsp.tmp"))
    tiers = {(e["tool"], e["tier"]) for e in audit(toolbox) if e["decision"] == "allow"}
    assert ("write_file", "destructive") in tiers and ("write_file", "write") in tiers
    assert ("apply_patch", "destructive") in tiers  # it deleted README.md


async def test_protected_places_are_read_only(bench, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "a.py").write_text("x = 1\n")
    toolbox = bench.toolbox(root=root, write="allow", destructive="allow", allow_secret_files=False)
    async with connect(toolbox) as client:
        git_read = await client.call_tool("read_file", {"path": ".git/config"})
        git_write = await client.call_tool("write_file", {"path": ".git/hooks/pre-commit", "content": "evil"})
        git_edit = await client.call_tool(
            "edit_file", {"path": ".git/config", "old_text": "core", "new_text": "x"}
        )
        env_write = await client.call_tool("write_file", {"path": "prod.env", "content": "A=1"})
        root_write = await client.call_tool("write_file", {"path": ".", "content": "x"})
    assert not git_read.is_error
    assert git_write.is_error and ".git/" in text(git_write)
    assert git_edit.is_error and ".git/" in text(git_edit)
    assert env_write.is_error and "secret" in text(env_write)
    assert root_write.is_error
    assert not (root / ".git" / "hooks").exists() and not (root / "prod.env").exists()
    assert (root / ".git" / "config").read_text() == "[core]\n"


async def test_a_file_hard_linked_from_outside_is_read_but_never_written(bench, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("kept\n")
    os.link(outside, root / "linked.txt")
    toolbox = bench.toolbox(root=root, write="allow", destructive="allow")
    async with connect(toolbox) as client:
        read = await client.call_tool("read_file", {"path": "linked.txt"})
        written = await client.call_tool("write_file", {"path": "linked.txt", "content": "changed\n"})
        edited = await client.call_tool(
            "edit_file", {"path": "linked.txt", "old_text": "kept", "new_text": "changed"}
        )
        patched = await client.call_tool(
            "apply_patch", {"patch": "--- a/linked.txt\n+++ b/linked.txt\n@@ -1 +1 @@\n-kept\n+changed\n"}
        )
    assert not read.is_error and "kept" in text(read)
    for result in (written, edited, patched):
        assert result.is_error and "hard links" in text(result), text(result)
    assert outside.read_text() == "kept\n" and (root / "linked.txt").read_text() == "kept\n"


async def test_index_folder_inside_the_workspace_is_read_only(bench, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    toolbox = bench.toolbox(root=root, index_location=root / ".swarm-lsp", write="allow")
    async with connect(toolbox) as client:
        search = await client.call_tool("search_code", {"query": "x"})  # opens the index in .swarm-lsp/
        listed = await client.call_tool("list_dir", {"path": ".swarm-lsp"})
        result = await client.call_tool("write_file", {"path": ".swarm-lsp/index/x.txt", "content": "x"})
        audit_write = await client.call_tool(
            "write_file", {"path": ".swarm-lsp/audit.jsonl", "content": "{}", "overwrite": True}
        )
    assert not search.is_error and not listed.is_error
    assert result.is_error and "swarm-lsp's own data" in text(result)
    assert audit_write.is_error and "swarm-lsp's own data" in text(audit_write)
    assert not (root / ".swarm-lsp" / "index" / "x.txt").exists()


# -------------------------------------------------------------------------------- run_command


async def test_run_command_streams_output_as_progress_and_enforces_limits(bench):
    toolbox = bench.toolbox(execute="allow", max_output_kb=2)
    updates: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, message))

    async with connect(toolbox) as client:
        streamed = await client.call_tool(
            "run_command",
            {"command": "for i in 1 2 3 4 5; do echo step $i; sleep 0.3; done"},
            progress_callback=on_progress,
        )
        argv = await client.call_tool("run_command", {"command": ["ls", "pkg"], "cwd": "."})
        failing = await client.call_tool("run_command", {"command": "echo oops >&2; exit 3", "cwd": "pkg"})
        slow = await client.call_tool("run_command", {"command": "sleep 30", "timeout_s": 0.5})
        noisy = await client.call_tool("run_command", {"command": "seq 1 20000"})
        missing = await client.call_tool("run_command", {"command": ["no-such-program-xyz"]})
    assert not streamed.is_error and "step 5" in text(streamed)
    assert len(updates) >= 3, updates
    assert any(message and "step 1" in message for _, message in updates)
    assert [done for done, _ in updates] == sorted(done for done, _ in updates)
    assert "greeting.py" in text(argv)
    assert failing.is_error and "exit code 3" in text(failing) and "oops" in text(failing)
    assert slow.is_error and "timed out" in text(slow)
    assert slow.structured_content["timed_out"] is True
    assert noisy.structured_content["truncated"] is True and "bytes cut" in text(noisy)
    assert "20000" in text(noisy) and len(text(noisy)) < 3000
    assert missing.is_error and "not found" in text(missing)


# ------------------------------------------------------------------------------------- policy


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_ask_accepted_runs_the_call_after_the_user_approves(bench, mode):
    toolbox = bench.toolbox()
    user = Elicitor("accept")
    async with connect(toolbox, mode=mode, elicit=user) as client:
        result = await client.call_tool("write_file", {"path": "approved.txt", "content": "yes\n"})
    assert not result.is_error, text(result)
    assert (toolbox.workspace.root / "approved.txt").read_text() == "yes\n"
    assert len(user.messages) == 1 and "create approved.txt" in user.messages[0]
    entry = audit(toolbox)[-1]
    assert (entry["decision"], entry["decided_by"], entry["rule"]) == ("allow", "user", "tools.write = ask")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(
    ("action", "approve", "verb"),
    [("decline", True, "declined"), ("cancel", True, "cancelled"), ("accept", False, "declined")],
)
async def test_ask_declined_or_cancelled_runs_nothing(bench, mode, action, approve, verb):
    toolbox = bench.toolbox()
    user = Elicitor(action, approve)
    async with connect(toolbox, mode=mode, elicit=user) as client:
        result = await client.call_tool("delete_file", {"path": "notes.txt"})
    assert result.is_error and f"you {verb} it" in text(result)
    assert (toolbox.workspace.root / "notes.txt").exists()
    assert len(user.messages) == 1
    entry = audit(toolbox)[-1]
    assert (entry["decision"], entry["decided_by"], entry["tier"]) == ("deny", "user", "destructive")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_ask_without_elicitation_is_refused_with_how_to_allow_it(bench, mode):
    toolbox = bench.toolbox()
    async with connect(toolbox, mode=mode) as client:
        result = await client.call_tool("run_command", {"command": "touch ran.txt"})
    message = text(result)
    assert result.is_error
    assert "does not support MCP elicitation" in message
    assert 'run_command = "allow"' in message and "SWARM_LSP_TOOLS__EXECUTE=allow" in message
    assert not (toolbox.workspace.root / "ran.txt").exists()
    entry = audit(toolbox)[-1]
    assert (entry["decision"], entry["decided_by"]) == ("deny", "client")


async def test_allow_runs_without_asking(bench):
    toolbox = bench.toolbox(write="allow")
    user = Elicitor("accept")
    async with connect(toolbox, elicit=user) as client:
        result = await client.call_tool("write_file", {"path": "free.txt", "content": "ok"})
    assert not result.is_error and user.messages == []
    entry = audit(toolbox)[-1]
    assert (entry["decision"], entry["decided_by"], entry["rule"]) == (
        "allow",
        "policy",
        "tools.write = allow",
    )


async def test_deny_refuses_without_asking(bench):
    toolbox = bench.toolbox(per_tool={"edit_file": "deny"})
    user = Elicitor("accept")
    async with connect(toolbox, elicit=user) as client:
        result = await client.call_tool(
            "edit_file", {"path": "notes.txt", "old_text": "line 5\n", "new_text": "x\n"}
        )
        read = await client.call_tool("read_file", {"path": "notes.txt", "end_line": 1})
    assert result.is_error and "denied by the settings (tools.per_tool.edit_file = deny)" in text(result)
    assert user.messages == [] and not read.is_error
    entry = [e for e in audit(toolbox) if e["tool"] == "edit_file"][-1]
    assert (entry["decision"], entry["decided_by"]) == ("deny", "policy")


async def test_a_destructive_call_of_an_allowed_tool_is_still_asked(bench):
    toolbox = bench.toolbox(per_tool={"write_file": "allow"}, execute="allow")
    user = Elicitor("decline")
    async with connect(toolbox, elicit=user) as client:
        created = await client.call_tool("write_file", {"path": "fresh.txt", "content": "a"})
        overwrite = await client.call_tool(
            "write_file", {"path": "notes.txt", "content": "gone", "overwrite": True}
        )
        harmless = await client.call_tool("run_command", {"command": "echo fine"})
        wipe = await client.call_tool("run_command", {"command": "rm -rf pkg"})
        reset = await client.call_tool("run_command", {"command": ["git", "reset", "--hard", "HEAD~3"]})
    assert not created.is_error and not harmless.is_error
    assert overwrite.is_error and wipe.is_error and reset.is_error
    assert len(user.messages) == 3
    assert "destructive" in user.messages[1] and "rm -rf pkg" in user.messages[1]
    assert (toolbox.workspace.root / "pkg" / "greeting.py").exists()
    assert (toolbox.workspace.root / "notes.txt").read_text().startswith("line 1")


async def test_unknown_tool_and_invalid_arguments_are_errors_that_explain(bench):
    toolbox = bench.toolbox()
    async with connect(toolbox) as client:
        unknown = await client.call_tool("format_disk", {})
        wrong = await client.call_tool("read_file", {"path": 3, "mode": "x"})
        missing = await client.call_tool("search_code", {})
    assert unknown.is_error and "unknown tool 'format_disk'" in text(unknown) and "read_file" in text(unknown)
    assert wrong.is_error and "invalid arguments for read_file" in text(wrong)
    assert missing.is_error and "'query' is a required property" in text(missing)
    assert [e["decision"] for e in audit(toolbox)] == [None, None, None]


# ----------------------------------------------------------------------------------- roots


async def test_client_roots_narrow_what_the_tools_see(bench):
    toolbox = bench.toolbox()
    pkg = toolbox.workspace.root / "pkg"
    async with connect(toolbox, mode="legacy", roots=[pkg]) as client:
        inside = await client.call_tool("read_file", {"path": "greeting.py"})
        outside = await client.call_tool("read_file", {"path": str(toolbox.workspace.root / "README.md")})
        search = await client.call_tool("search_code", {"query": "people greets tiny"})
    assert not inside.is_error and "def greet" in text(inside)
    assert outside.is_error and "outside the workspace" in text(outside)
    assert all(hit["path"].startswith("pkg/") for hit in search.structured_content["hits"])


# ----------------------------------------------------------------------------------- cache


async def test_read_results_are_cached_until_the_file_changes(bench):
    toolbox = bench.toolbox()
    path = toolbox.workspace.root / "notes.txt"
    async with connect(toolbox) as client:
        first = await client.call_tool("read_file", {"path": "notes.txt", "end_line": 2})
        second = await client.call_tool("read_file", {"path": "notes.txt", "end_line": 2})
        path.write_text("changed 1\nchanged 2\n")
        third = await client.call_tool("read_file", {"path": "notes.txt", "end_line": 2})
        search_a = await client.call_tool("search_code", {"query": "greet"})
        search_b = await client.call_tool("search_code", {"query": "greet"})
    assert text(first) == text(second) == "line 1\nline 2\n"
    assert text(third) == "changed 1\nchanged 2\n"
    assert text(search_a) == text(search_b)
    cached = [(e["tool"], e["cached"]) for e in audit(toolbox)]
    assert cached == [
        ("read_file", False),
        ("read_file", True),
        ("read_file", False),
        ("search_code", False),
        ("search_code", True),
    ]


async def test_the_watcher_invalidates_cached_search_results(bench):
    toolbox = bench.toolbox(watch=True)
    async with connect(toolbox) as client:
        before = await client.call_tool("search_code", {"query": "quokkafish"})
        assert before.structured_content["hits"] == []
        generation = toolbox.cache.generation
        (toolbox.workspace.root / "pkg" / "animals.py").write_text("def quokkafish():\n    return 1\n")
        # A sync by the watcher bumps the cache's index generation, which makes cached searches stale.
        await wait_until_async(
            "the watcher to sync pkg/animals.py (the cache's index generation to change)",
            lambda: toolbox.cache.generation != generation,
        )
        after = await client.call_tool("search_code", {"query": "quokkafish"})
    hits = after.structured_content["hits"]
    assert hits and hits[0]["path"] == "pkg/animals.py"


# ------------------------------------------------------------------------- concurrency and audit


async def test_fifty_concurrent_calls_all_answer_and_all_are_audited_with_secrets_redacted(bench):
    toolbox = bench.toolbox(write="allow")
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    calls = []
    for n in range(50):
        kind = n % 5
        if kind == 0:
            calls.append(("read_file", {"path": "notes.txt", "start_line": n + 1, "end_line": n + 1}))
        elif kind == 1:
            calls.append(("search_code", {"query": f"greet {n}"}))
        elif kind == 2:
            calls.append(("find_symbol", {"name": "greet"}))
        elif kind == 3:
            calls.append(("list_dir", {"path": "pkg"}))
        else:
            calls.append(("write_file", {"path": f"out/{n}.txt", "content": f"n={n} token={secret}\n"}))
    async with connect(toolbox) as client:
        results = await asyncio.gather(*(client.call_tool(name, args) for name, args in calls))
    for (name, args), result in zip(calls, results, strict=True):
        assert not result.is_error, (name, args, text(result))
        if name == "read_file":
            assert text(result) == f"line {args['start_line']}\n"
        if name == "write_file":
            assert (toolbox.workspace.root / args["path"]).read_text() == args["content"]
    entries = audit(toolbox)
    assert len(entries) == 50
    assert sorted(e["tool"] for e in entries) == sorted(name for name, _ in calls)
    raw = toolbox.audit.path.read_text()
    assert secret not in raw
    assert all(e["decision"] == "allow" and e["duration_ms"] >= 0 for e in entries)
    written = [e for e in entries if e["tool"] == "write_file"]
    assert all("[redacted]" in e["arguments"]["content"] for e in written)
    assert all(e["result_bytes"] > 0 and e["client"] == "mcp 0.1.0 (memory)" for e in entries)


async def test_audit_redacts_secret_arguments(bench):
    toolbox = bench.toolbox(execute="allow")
    async with connect(toolbox) as client:
        await client.call_tool("run_command", {"command": "echo $API_KEY", "token": "hunter2-token"})
        await client.call_tool("run_command", {"command": "echo 'Authorization: Bearer abcdef123456'"})
        await client.call_tool("run_command", {"command": ["mysql", "--password", "hunter2", "db"]})
        await client.call_tool("search_code", {"query": "AWS_SECRET=AKIAABCDEFGHIJKLMNOP"})
        refused = await client.call_tool(
            "write_file", {"path": "k.txt", "content": "key ghp_abcdefghijklmnopqrstuvwx"}
        )
        denied = await client.call_tool("run_command", {"command": "rm -rf x --token=hunter3secret"})
    assert refused.is_error and denied.is_error  # write asks and this client cannot; rm is destructive
    raw = toolbox.audit.path.read_text()
    for secret in (
        "hunter2",
        "abcdef123456",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_abcdefghijklmnopqrstuvwx",
        "hunter3secret",
    ):
        assert secret not in raw
    entries = audit(toolbox)
    assert entries[0]["arguments"]["token"] == "[redacted]"
    assert entries[2]["arguments"]["command"] == ["mysql", "--password", "[redacted]", "db"]
    assert entries[3]["arguments"]["query"] == "AWS_SECRET=[redacted]"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_file_changed_while_the_user_decides_is_not_overwritten(bench, mode):
    toolbox = bench.toolbox()
    root = toolbox.workspace.root
    patch = (
        "--- a/notes.txt\n+++ b/notes.txt\n@@ -1 +1 @@\n-line 1\n+LINE ONE\n"
        "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# Tiny app\n+# Small app\n"
    )

    class MeddlingUser(Elicitor):
        """Accepts, but someone edits README.md while the prompt is open."""

        async def __call__(self, context, params):
            (root / "README.md").write_text("# Tiny app\n\nEdited meanwhile.\n")
            return await super().__call__(context, params)

    async with connect(toolbox, mode=mode, elicit=MeddlingUser("accept")) as client:
        patched = await client.call_tool("apply_patch", {"patch": patch})
        (root / "README.md").write_text(FILES["README.md"])
        edited = await client.call_tool(
            "edit_file", {"path": "README.md", "old_text": "Tiny", "new_text": "Big"}
        )
    assert patched.is_error
    if mode == "legacy":  # asked in the middle of the call: the journal finds README.md changed, unwritten
        assert "changed while the call waited" in text(patched) and "nothing was changed" in text(patched)
    else:  # asked between two rounds: the second round sees the change before writing anything
        assert "changed while you were deciding" in text(patched)
    assert (root / "notes.txt").read_text() == FILES["notes.txt"]
    assert edited.is_error and (root / "README.md").read_text() == "# Tiny app\n\nEdited meanwhile.\n"


async def test_a_swarm_answer_that_draws_on_a_secret_file_is_withheld(bench):
    from types import SimpleNamespace

    from swarm_lsp.tools.registry import Caller, Refused
    from swarm_lsp.tools.swarm import withhold_secrets

    toolbox = bench.toolbox()
    await toolbox.ensure_index()
    env = toolbox._env(Caller())

    def answer(text: str, sources: list[str]) -> SimpleNamespace:
        return SimpleNamespace(answer=text, edit=None, sources=sources)

    # The index leaves secret files out, so their values never reach a prompt in the first place.
    assert not any(env.sandbox.is_secret(path) for path in env.workspace.store.files())
    withhold_secrets(env, answer("greet says hello (pkg/greeting.py:4-6)", ["pkg/greeting.py:4-6"]))
    with pytest.raises(Refused, match=r"secret file\(s\) \(\.env\)"):
        withhold_secrets(env, answer("Set it in .env.", [".env:1-2"]))
    with pytest.raises(Refused, match=r"deploy/server\.pem"):
        withhold_secrets(env, answer("It is configured elsewhere.", ["deploy/server.pem:1-3"]))


async def test_run_command_gets_an_environment_without_secrets_unless_allowed(bench, monkeypatch):
    monkeypatch.setenv("DEPLOY_API_KEY", "sk-do-not-leak-1234567890")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_allowedtokenvalue1234567890")
    monkeypatch.setenv("PLAIN_SETTING", "visible")
    toolbox = bench.toolbox(execute="allow", command_env_allow=["GITHUB_*"])
    async with connect(toolbox) as client:
        shown = await client.call_tool("run_command", {"command": "env"})
    output = text(shown)
    assert not shown.is_error and "PLAIN_SETTING=visible" in output
    assert "DEPLOY_API_KEY=" not in output and "sk-do-not-leak" not in output
    assert "GITHUB_TOKEN=ghp_allowedtokenvalue" in output, "an allowed pattern passes"
    assert "DEPLOY_API_KEY" in shown.structured_content["withheld_variables"]
    assert "named like secrets were not passed" in output
