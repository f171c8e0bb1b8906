"""Fuzzing every MCP tool through the real server (`build_server`) and the SDK's own client.

The tools come from the server's tools/list; hypothesis generates their arguments from each input
schema (paths, patches and commands aimed at the workspace's edges: `..`, absolute paths outside it,
a symlinked folder and file that lead out, a hard link to a file outside, NUL bytes, `~`) and then
mutates them (wrong types, a required key dropped, unknown keys, huge strings). Both protocol eras
are used: 2026-07-28 (approval through input_required) and 2025-11-25 (elicitation requests).

Properties, after every run of calls:
- every call returns a result that a transport can encode: a schema violation is an error that
  says "invalid arguments for <tool>" and names the problem; nothing is an internal error, no
  exception reaches the client (the workspace holds a file whose name is not UTF-8, and arguments
  may hold lone surrogates, as JSON's "\\ud800" decodes);
- nothing outside the workspace changes (a sentinel folder, the files the links lead to, and the
  folder that holds the workspace);
- nothing changes without the approval its tier needs: with writes asked and commands denied and a
  user who declines, or with writes and commands denied and a user who accepts everything asked,
  the workspace stays exactly as it was;
- with writes and destructive calls allowed, the workspace may change but nothing outside it does.

The swarm tools run up to the model, which is configured missing so they answer at once (with an
error that says so); codebase refactors check their change by parsing only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import mcp_types as types
import pytest
from fuzz_support import fuzz_settings, huge_strings, json_values
from fuzz_support import nasty_strings as nasty
from hypothesis import event, example, given
from hypothesis import strategies as st
from test_mcp_support import FILES, Elicitor, connect, settings_for, text, write_tree

from swarm_lsp.config import load_settings
from swarm_lsp.tools.toolbox import Toolbox
from swarm_lsp.workspace import Workspace

pytestmark = pytest.mark.slow

OUTSIDE_FILES = {"secret.txt": "outside, never to change\n", "hard.txt": "hard-linked into the workspace\n"}
WS, OUTSIDE = "{WS}", "{OUTSIDE}"
"""Placeholders in generated values for the workspace and the sentinel folder, filled in per bench."""
TRICK_PATHS = (
    "../outside/secret.txt",
    "../../../../../etc/passwd",
    f"{OUTSIDE}/secret.txt",
    f"{OUTSIDE}/new-file.txt",
    f"{WS}/../outside/secret.txt",
    f"{WS}/pkg/greeting.py",
    "escape/secret.txt",
    "escape/new-file.txt",
    "escape",
    "secret-link.txt",
    "hard.txt",
    "loop",
    "loop/x",
    "pkg/../../outside/secret.txt",
    "pkg/./greeting.py",
    "pkg//greeting.py",
    "pkg/",
    "pkg\\..\\..\\outside\\secret.txt",
    "~/pwned.txt",
    "~root/.bashrc",
    "a\x00b.txt",
    "pkg/greeting.py\x00.txt",
    "",
    ".",
    "/",
    "..",
    "%2e%2e/outside/secret.txt",
    ".git/config",
    ".env",
    "deploy/server.pem",
    "x" * 300,
    "dir/" * 60 + "deep.txt",
    "naïve/ünïcode 😀.txt",
    "con",
    "-rf",
)
PLAIN_PATHS = ("README.md", "notes.txt", "pkg/greeting.py", "pkg/uses.py", "pkg", "new/file.txt", "fresh.txt")
MODEL_FREE = {"model": {"name": "fuzz-no-such-model"}, "refactor": {"check": "parse"}}


def paths() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(TRICK_PATHS), st.sampled_from(PLAIN_PATHS), nasty(40))


def patches() -> st.SearchStrategy[str]:
    def diff(kind: int, old: str, new: str, line: str) -> str:
        if kind == 0:
            return f"--- a/{old}\n+++ b/{new}\n@@ -1,1 +1,1 @@\n-{line}\n+changed\n"
        if kind == 1:
            return f"--- /dev/null\n+++ b/{new}\n@@ -0,0 +1,1 @@\n+{line}\n"
        if kind == 2:
            return f"--- a/{old}\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-{line}\n"
        return f"diff --git a/{old} b/{new}\nrename from {old}\nrename to {new}\n"

    lines = st.sampled_from(["line 1", "# Tiny app", '"""The package."""', "outside, never to change", "x"])
    return st.one_of(
        st.builds(diff, st.integers(0, 3), paths(), paths(), lines), nasty(200), huge_strings(200_000)
    )


def commands() -> st.SearchStrategy[Any]:
    shell = st.sampled_from(
        [
            f"touch {OUTSIDE}/pwned",
            "touch made-by-fuzz.txt",
            "rm -rf pkg",
            f"rm -rf {WS}",
            "git reset --hard",
            "echo hi > notes.txt",
            f"cp {OUTSIDE}/secret.txt .",
            "sleep 30",
        ]
    )
    argv = st.lists(
        st.sampled_from(["touch", "rm", "-rf", "x.txt", f"{OUTSIDE}/pwned", "python", "-c", "1"]),
        min_size=1,
        max_size=4,
    )
    return st.one_of(shell, argv, nasty(40))


def value_for(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value valid for `schema` (mostly), shaped for what the field means."""
    if "oneOf" in schema:
        return st.one_of(*(value_for(name, option) for option in schema["oneOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if name in ("path", "cwd"):
            return paths()
        if name == "patch":
            return patches()
        if name == "command":
            return commands()
        if name in ("old_text", "new_text", "content"):
            return st.one_of(
                st.sampled_from(["line 5\n", "# Tiny app", "greet", "x"]), nasty(80), huge_strings(300_000)
            )
        if name in ("name", "symbol", "query"):
            return st.one_of(st.sampled_from(["greet", "Registry.lookup", "lookup", "*", "a.b.c"]), nasty(40))
        return nasty(40).filter(lambda value: len(value) >= schema.get("minLength", 0))
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.integers(low, high)
    if kind == "number":
        return st.one_of(st.floats(0.01, 3.0), st.sampled_from([0.001, 1e9]))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(
            value_for(name, items),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 4), 4),
        )
    return json_values()


@st.composite
def arguments_for(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """Schema-shaped arguments, then perhaps one mutation that breaks the schema."""
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    args = {
        name: draw(value_for(name, spec))
        for name, spec in properties.items()
        if name in required or draw(st.booleans())
    }
    mutation = draw(st.integers(0, 7))
    if mutation == 0 and args:  # a required key (or any) dropped
        args.pop(draw(st.sampled_from(sorted(args))))
    elif mutation == 1:  # an unknown key
        args[draw(st.sampled_from(["mode", "force", "PATH", "__proto__", "", "path\x00"]))] = draw(
            json_values()
        )
    elif mutation == 2 and properties:  # a value of another type
        args[draw(st.sampled_from(sorted(properties)))] = draw(json_values())
    elif mutation == 3 and properties:  # a huge string anywhere
        args[draw(st.sampled_from(sorted(properties)))] = draw(huge_strings(200_000))
    return args


def client_can_send(arguments: Any) -> bool:
    """The SDK's client encodes a request before it sends it, and pydantic refuses a lone surrogate in
    a nested object's key (values and top-level keys pass): such calls cannot be made with it."""
    try:
        types.CallToolRequestParams(name="x", arguments=arguments).model_dump(mode="json")
    except UnicodeEncodeError:
        return False
    return True


@st.composite
def runs(
    draw: st.DrawFn, tools: dict[str, dict[str, Any]], exclude: frozenset[str] = frozenset()
) -> list[tuple[str, Any]]:
    names = sorted(set(tools) - exclude)
    calls = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(names))
        arguments = draw(st.one_of(arguments_for(tools[name]), st.none()).filter(client_can_send))
        calls.append((name, arguments))
        CALLED.add(name)
    return calls


# ---------------------------------------------------------------------------------------- benches


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under `root`, not following symlinks: file bytes, link targets, folders."""
    found: dict[str, Any] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes())
    return found


@dataclass
class FuzzBench:
    """A workspace with links that lead out of it, a sentinel folder beside it, and a toolbox."""

    base: Path
    toolbox: Toolbox
    tools: dict[str, dict[str, Any]]

    @property
    def root(self) -> Path:
        return self.toolbox.workspace.root

    @property
    def outside(self) -> Path:
        return self.base / "outside"

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(WS, str(self.root)).replace(OUTSIDE, str(self.outside))
        if isinstance(value, list):
            return [self.fill(item) for item in value]
        if isinstance(value, dict):
            return {self.fill(key): self.fill(item) for key, item in value.items()}
        return value

    def surroundings(self) -> tuple[Any, ...]:
        """What must never change: the sentinel folder and what lies beside the workspace."""
        return snapshot(self.outside), sorted(os.listdir(self.base))


def make_bench(base: Path, data: Path, **tools: Any) -> FuzzBench:
    """The workspace in `base`/ws beside the sentinel `base`/outside; the index and audit log in `data`."""
    outside, root = base / "outside", base / "ws"
    write_tree(outside, OUTSIDE_FILES)
    write_tree(root, {**FILES, "escape-target-note.md": "links below lead out\n"})
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "secret-link.txt").symlink_to(outside / "secret.txt")
    (root / "loop").symlink_to(root / "loop")
    os.link(outside / "hard.txt", root / "hard.txt")
    (root / os.fsdecode(b"not-utf8-\xff\xfe.txt")).write_text("a file whose name is not UTF-8\n")
    settings = settings_for(data, data / "index", **tools) | MODEL_FREE
    loaded = load_settings(root, settings, env={}, user_file=data / "none.toml")
    toolbox = Toolbox(Workspace(root, loaded=loaded), watch=False)
    toolbox.start()

    async def listed() -> dict[str, dict[str, Any]]:
        async with connect(toolbox) as client:
            return {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}

    return FuzzBench(base, toolbox, asyncio.run(listed()))


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FuzzBench]]:
    policies = {
        "asked": {"write": "ask", "execute": "deny", "destructive": "ask"},
        "denied": {"write": "deny", "execute": "deny", "destructive": "ask"},
        "allowed": {"write": "allow", "execute": "deny", "destructive": "allow"},
    }
    made = {
        name: make_bench(tmp_path_factory.mktemp(name), tmp_path_factory.mktemp("data"), **policy)
        for name, policy in policies.items()
    }
    yield made
    for bench in made.values():
        bench.toolbox.close()
        asyncio.run(bench.toolbox.workspace.aclose())


def call_all(bench: FuzzBench, calls: list[tuple[str, Any]], mode: str, user: Elicitor) -> list[Any]:
    async def go() -> list[Any]:
        async with connect(bench.toolbox, mode=mode, elicit=user) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(go())


def check_results(bench: FuzzBench, calls: list[tuple[str, Any]], results: list[Any]) -> None:
    for (name, arguments), result in zip(calls, results, strict=True):
        said = text(result)
        empty_file = name == "read_file" and (result.structured_content or {}).get("total_lines") == 0
        assert said or empty_file, f"{name}: a result without text"
        result.model_dump_json()  # what stdio and HTTP send: must encode (no lone surrogate)
        assert "internal error" not in said, f"{name}({arguments!r:.300}): {said[:400]}"
        valid = jsonschema.Draft202012Validator(bench.tools[name]).is_valid(arguments or {})
        event(f"{'valid' if valid else 'invalid'} arguments, {'error' if result.is_error else 'done'}")
        if not valid:
            assert result.is_error, f"{name} accepted arguments its schema refuses: {arguments!r:.300}"
            assert f"invalid arguments for {name}" in said, f"{name}: {said[:300]}"


CALLED: set[str] = set()
"""The tools the fuzzers called in this session."""


# ------------------------------------------------------------------------------------------ tests


@example(
    calls=[("write_file", {"path": "notes.txt", "content": "gone", "overwrite": True})],
    mode="auto",
    policy="denied",
)
@example(calls=[("run_command", {"command": "rm -rf pkg"})], mode="legacy", policy="denied")
@example(
    calls=[("write_file", {"path": "escape/new-file.txt", "content": "x"})], mode="legacy", policy="asked"
)
@example(calls=[("read_file", {"path": "."}), ("read_file", {"path": "loop/x"})], mode="auto", policy="asked")
@given(calls=st.data(), mode=st.sampled_from(["auto", "legacy"]), policy=st.sampled_from(["asked", "denied"]))
@fuzz_settings(800)
def test_no_call_changes_anything_without_the_approval_its_tier_needs(benches, calls, mode, policy) -> None:
    """asked: writes and destructive calls asked, commands denied, the user declines. denied: writes
    and commands denied, destructive calls asked and the user accepts; delete_file (destructive by
    declaration) is left out there, since accepting it is its approval."""
    bench = benches[policy]
    if not isinstance(calls, list):
        exclude = frozenset({"delete_file"}) if policy == "denied" else frozenset()
        calls = calls.draw(runs(bench.tools, exclude))
    calls = bench.fill(calls)
    user = Elicitor("accept", approve=True) if policy == "denied" else Elicitor("decline")
    workspace, around = snapshot(bench.root), bench.surroundings()
    results = call_all(bench, calls, mode, user)
    check_results(bench, calls, results)
    assert snapshot(bench.root) == workspace, f"the workspace changed without approval after {calls!r:.500}"
    assert bench.surroundings() == around, f"something outside the workspace changed after {calls!r:.500}"


@example(calls=[("write_file", {"path": "escape/new-file.txt", "content": "x"})], mode="auto")
@example(calls=[("edit_file", {"path": "hard.txt", "old_text": "hard", "new_text": "soft"})], mode="auto")
@example(
    calls=[("apply_patch", {"patch": "--- /dev/null\n+++ b/../outside/new.txt\n@@ -0,0 +1,1 @@\n+x\n"})],
    mode="auto",
)
@given(calls=st.data(), mode=st.sampled_from(["auto", "legacy"]))
@fuzz_settings(800)
def test_allowed_writes_never_reach_outside_the_workspace(benches, calls, mode) -> None:
    bench = benches["allowed"]
    if not isinstance(calls, list):
        calls = calls.draw(runs(bench.tools))
    calls = bench.fill(calls)
    around = bench.surroundings()
    results = call_all(bench, calls, mode, Elicitor("decline"))
    check_results(bench, calls, results)
    assert bench.surroundings() == around, f"something outside the workspace changed after {calls!r:.500}"
    assert (bench.root / "escape").is_symlink() and (bench.root / "secret-link.txt").is_symlink()


def test_every_listed_tool_was_fuzzed(benches) -> None:
    """Runs after the fuzzers (file order): each tool tools/list names got generated calls."""
    listed = set(benches["allowed"].tools)
    assert len(listed) >= 15 and {"write_file", "apply_patch", "run_command", "ask_swarm"} <= listed
    assert listed <= CALLED, f"never called: {sorted(listed - CALLED)}"
