"""The path-escape suite: every trick against every tool that takes a path, through the MCP client.

Policy is set to allow everything, so the sandbox is the only thing between a trick and the file
system. Each call must be refused (audited as denied by the sandbox), nothing outside the
workspace may change, and nothing from outside may appear in a result.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_mcp_support import FILES, Bench, audit, connect, snapshot, text

from swarm_lsp.tools.sandbox import Sandbox, SandboxRefused

OUTSIDE_TEXT = "TOP SECRET outside the workspace\n"


@pytest.fixture
async def escape(tmp_path):
    """A workspace with a sibling sharing its name as a prefix, a folder outside, and symlinks out."""
    root = tmp_path / "ws"
    root.mkdir()
    for rel, body in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE_TEXT)
    sibling = tmp_path / "ws-evil"
    sibling.mkdir()
    (sibling / "secret.txt").write_text(OUTSIDE_TEXT)
    (root / "link_out").symlink_to(outside, target_is_directory=True)
    (root / "link_file").symlink_to(outside / "secret.txt")
    (root / "pkg" / "nested_link").symlink_to("../../outside")
    bench = Bench(tmp_path)
    toolbox = bench.toolbox(root=root, write="allow", execute="allow", destructive="allow")
    yield toolbox, tmp_path
    await bench.aclose()


def tricks(tmp_path: Path) -> dict[str, str]:
    return {
        "dot-dot": "../outside/secret.txt",
        "dot-dot inside a path": "pkg/../../outside/secret.txt",
        "dot-dot with backslashes": "..\\outside\\secret.txt",
        "absolute elsewhere": str(tmp_path / "outside" / "secret.txt"),
        "absolute system file": "/etc/passwd",
        "sibling sharing the prefix": str(tmp_path / "ws-evil" / "secret.txt"),
        "symlinked folder out": "link_out/secret.txt",
        "symlinked file out": "link_file",
        "relative symlink out": "pkg/nested_link/secret.txt",
        "NUL byte": "pkg/greeting.py\x00.txt",
        "tilde": "~/.bashrc",
        "bare tilde": "~",
    }


def calls_for(path: str) -> dict[str, dict]:
    """Every path-taking tool, called with `path` where it takes one."""
    patch = f"--- {path}\n+++ {path}\n@@ -1 +1 @@\n-{OUTSIDE_TEXT.strip()}\n+pwned\n"
    return {
        "read_file": {"path": path},
        "list_dir": {"path": path},
        "write_file": {"path": path, "content": "pwned\n", "overwrite": True},
        "edit_file": {"path": path, "old_text": "TOP SECRET", "new_text": "pwned"},
        "apply_patch": {"patch": patch},
        "delete_file": {"path": path},
        "get_outline": {"path": path},
        "repo_map": {"focus": [path]},
        "ask_swarm": {"question": "what is in this file?", "path": path},
        "explain_code": {"path": path},
        "propose_refactor": {"path": path, "start_line": 1, "end_line": 1, "instruction": "rename"},
        "run_command": {"command": ["cat", "secret.txt"], "cwd": path},
    }


async def test_every_trick_is_refused_by_every_path_taking_tool(escape):
    toolbox, tmp_path = escape
    before_outside = snapshot(tmp_path / "outside") | {
        f"evil/{k}": v for k, v in snapshot(tmp_path / "ws-evil").items()
    }
    before_inside = snapshot(toolbox.workspace.root)
    attempts = []
    async with connect(toolbox) as client:
        for trick, path in tricks(tmp_path).items():
            for tool, args in calls_for(path).items():
                result = await client.call_tool(tool, args)
                attempts.append((trick, tool, result))
    for trick, tool, result in attempts:
        assert result.is_error, f"{tool} accepted the {trick} trick: {text(result)}"
        assert "TOP SECRET" not in text(result), f"{tool} leaked outside content via {trick}"
        assert "root:" not in text(result), f"{tool} leaked /etc/passwd via {trick}"
    after_outside = snapshot(tmp_path / "outside") | {
        f"evil/{k}": v for k, v in snapshot(tmp_path / "ws-evil").items()
    }
    assert after_outside == before_outside
    assert snapshot(toolbox.workspace.root) == before_inside
    assert (Path.home() / ".bashrc").exists() == os.path.exists(os.path.expanduser("~/.bashrc"))
    entries = audit(toolbox)
    assert len(entries) == len(attempts) == 12 * 12
    assert {(entry["decision"], entry["decided_by"]) for entry in entries} == {("deny", "sandbox")}


async def test_secret_files_are_hidden_unless_allowed(tmp_path):
    bench = Bench(tmp_path)
    hidden = bench.toolbox(write="allow")
    async with connect(hidden) as client:
        env = await client.call_tool("read_file", {"path": ".env"})
        pem = await client.call_tool("read_file", {"path": "deploy/server.pem"})
        absolute = await client.call_tool("read_file", {"path": str(hidden.workspace.root / ".env")})
        listed = await client.call_tool("list_dir", {"path": "deploy"})
        search = await client.call_tool("search_code", {"query": "PRIVATE KEY"})
    await bench.aclose()
    for result in (env, pem, absolute):
        assert result.is_error and "secret" in text(result) and "allow_secret_files" in text(result)
    assert text(listed) == "(empty folder)"
    assert all(not hit["path"].endswith(".pem") for hit in search.structured_content["hits"])

    other = Bench(tmp_path / "allowed")
    allowed = other.toolbox(allow_secret_files=True)
    async with connect(allowed) as client:
        env = await client.call_tool("read_file", {"path": ".env"})
    await other.aclose()
    assert not env.is_error and "API_KEY" in text(env)


async def test_a_symlink_to_a_secret_is_hidden_too(tmp_path):
    bench = Bench(tmp_path)
    toolbox = bench.toolbox()
    (toolbox.workspace.root / "config.txt").symlink_to(toolbox.workspace.root / ".env")
    async with connect(toolbox) as client:
        result = await client.call_tool("read_file", {"path": "config.txt"})
    await bench.aclose()
    assert result.is_error and "secret" in text(result)


def test_symlinks_inside_the_workspace_are_followed_for_reading(tmp_path):
    root = tmp_path / "ws"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.txt").write_text("inside\n")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    sandbox = Sandbox([root], workspace_root=root)
    safe = sandbox.resolve("alias/a.txt")
    assert safe.rel == "real/a.txt" and safe.shown == "real/a.txt"
    assert sandbox.read_bytes(safe)[0] == b"inside\n"


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path):
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("mine\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text(OUTSIDE_TEXT)
    sandbox = Sandbox([root], workspace_root=root)
    safe = sandbox.resolve("sub/f.txt", write=True)  # checked while sub/ is a real folder
    (root / "sub" / "f.txt").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(outside, target_is_directory=True)  # the attacker wins the race
    with pytest.raises(SandboxRefused, match="symlink"):
        sandbox.read_bytes(safe)
    with pytest.raises(SandboxRefused, match="symlink"), sandbox.open_parent(safe):
        pass
    assert (outside / "f.txt").read_text() == OUTSIDE_TEXT


def test_roots_are_compared_by_components_not_string_prefix(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    (tmp_path / "app-evil").mkdir()
    sandbox = Sandbox([root], workspace_root=root)
    with pytest.raises(SandboxRefused, match="outside the workspace"):
        sandbox.resolve(str(tmp_path / "app-evil" / "x"))
    assert sandbox.resolve(str(root / "x")).rel == "x"
    assert sandbox.resolve(".").rel == ""
    with pytest.raises(SandboxRefused, match="workspace root itself"):
        sandbox.resolve(".", write=True)


def test_secret_and_protected_names_match_in_any_case(tmp_path):
    # On a case-insensitive file system `.ENV` opens `.env` and `.GIT/` is `.git/`.
    root = tmp_path / "ws"
    root.mkdir()
    sandbox = Sandbox([root], workspace_root=root, secret_patterns=[".env", "*.PEM"])
    for name in (".ENV", "Keys/Server.pem", "deploy/.Env"):
        with pytest.raises(SandboxRefused, match="secret"):
            sandbox.resolve(name)
    with pytest.raises(SandboxRefused, match=r"\.git/"):
        sandbox.resolve(".GIT/config", write=True)
