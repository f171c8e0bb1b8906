"""apply_patch over several files is all-or-nothing across a crash: a real process applying a patch is
killed with SIGKILL between two of its file writes (or after it committed), and the next start of a
toolbox, or of `swarm-lsp mcp` itself, rolls the patch back (or forward), leaves a file you changed
since alone, and says so on stderr and in the audit log. A journal of a process still alive is not
touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_mcp_support import FILES, Bench, Elicitor, connect, text

TESTS = Path(__file__).resolve().parent
SWARM_LSP = str(Path(sys.executable).with_name("swarm-lsp"))

PATCH = (
    "--- a/notes.txt\n+++ b/notes.txt\n@@ -1,2 +1,2 @@\n-line 1\n+LINE ONE\n line 2\n"
    "--- a/README.md\n+++ /dev/null\n@@ -1,3 +0,0 @@\n-# Tiny app\n-\n-It greets people.\n"
    "--- /dev/null\n+++ b/pkg/added.py\n@@ -0,0 +1 @@\n+ADDED = True\n"
)
PATCHED_NOTES = FILES["notes.txt"].replace("line 1\n", "LINE ONE\n", 1)

# Applies PATCH through the real registry, and stops itself with SIGKILL once `stop_after` files are
# written ("commit": once the patch is marked committed, before its journal is removed). With
# "hold" it says so and waits instead, to be killed from outside. No hook in the code: the child
# wraps the functions apply_patch calls.
CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from test_mcp_support import Bench
from swarm_lsp.tools import fs, patch_journal
from swarm_lsp.tools.registry import Caller

tmp, patch, stop_after, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

def stop():
    if how == "hold":
        print("holding", flush=True)
        sys.stdin.readline()
    os.kill(os.getpid(), signal.SIGKILL)

if stop_after == "commit":
    commit = patch_journal.PendingPatch.commit
    def commit_then_stop(self):
        commit(self)
        stop()
    patch_journal.PendingPatch.commit = commit_then_stop
else:
    written = 0
    def counted(write):
        def wrapper(*args, **kwargs):
            global written
            if written == int(stop_after):
                stop()
            result = write(*args, **kwargs)
            written += 1
            return result
        return wrapper
    fs.atomic_write = counted(fs.atomic_write)
    fs.delete_file = counted(fs.delete_file)

async def main():
    toolbox = Bench(tmp).toolbox(write="allow", destructive="allow")
    result = await toolbox.registry.call("apply_patch", {"patch": patch}, Caller())
    print("finished without being stopped:", result.text, flush=True)

asyncio.run(main())
"""


@pytest.fixture
async def bench(tmp_path):
    made = Bench(tmp_path)
    yield made
    await made.aclose()


def _crash(tmp_path: Path, stop_after: str, how: str = "kill") -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), PATCH, stop_after, how],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _killed(child: subprocess.Popen[str]) -> None:
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, f"the child was not killed:\n{out}\n{err[-3000:]}"


def _journals(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "index" / "pending-patches"
    return [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []


def _assert_before(root: Path) -> None:
    assert (root / "notes.txt").read_text() == FILES["notes.txt"]
    assert (root / "README.md").read_text() == FILES["README.md"]
    assert not (root / "pkg" / "added.py").exists()


def _prepare(bench: Bench) -> Path:
    """The workspace, with README.md (which the patch deletes) given a mode to come back with."""
    root = bench.toolbox().workspace.root
    (root / "README.md").chmod(0o640)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", ["0", "1", "2"])
async def test_a_patch_killed_between_its_files_is_rolled_back_at_the_next_start(bench, tmp_path, stop_after):
    root = _prepare(bench)
    _killed(_crash(tmp_path, stop_after))
    if stop_after == "2":  # notes.txt patched and README.md deleted; pkg/added.py not created yet
        assert (root / "notes.txt").read_text() == PATCHED_NOTES and not (root / "README.md").exists()
    assert len(_journals(tmp_path)) == 1

    toolbox = bench.toolbox()

    _assert_before(root)
    assert (root / "README.md").stat().st_mode & 0o777 == 0o640
    assert _journals(tmp_path) == []
    [settlement] = toolbox.recovered_patches
    assert settlement.direction == "rolled back"
    assert sorted(settlement.restored) == sorted(["notes.txt", "README.md"][: int(stop_after)])
    assert not settlement.changed_since and not settlement.failed


@pytest.mark.slow
async def test_a_patch_killed_after_it_committed_is_rolled_forward(bench, tmp_path):
    root = _prepare(bench)
    _killed(_crash(tmp_path, "commit"))
    assert len(_journals(tmp_path)) == 1

    toolbox = bench.toolbox()

    assert (root / "notes.txt").read_text() == PATCHED_NOTES
    assert not (root / "README.md").exists()
    assert (root / "pkg" / "added.py").read_text() == "ADDED = True\n"
    assert _journals(tmp_path) == []
    [settlement] = toolbox.recovered_patches
    assert settlement.direction == "rolled forward" and settlement.restored == []


@pytest.mark.slow
async def test_the_real_server_rolls_back_at_start_and_leaves_a_file_you_changed(bench, tmp_path):
    root = _prepare(bench)
    _killed(_crash(tmp_path, "2"))
    (root / "notes.txt").write_text("my own edit after the crash\n")
    env = dict(
        os.environ,
        SWARM_LSP_CONFIG_FILE=str(tmp_path / "none.toml"),
        SWARM_LSP_INDEX__LOCATION=str(tmp_path / "index"),
        SWARM_LSP_INDEX__EMBEDDER="none",
    )

    # `swarm-lsp mcp` over stdio with no client: it starts (settling the journal) and ends at EOF.
    server = subprocess.run(
        [SWARM_LSP, "mcp", "--workspace", str(root)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (root / "notes.txt").read_text() == "my own edit after the crash\n", "a user's edit was clobbered"
    assert (root / "README.md").read_text() == FILES["README.md"]
    assert not (root / "pkg" / "added.py").exists()
    assert "a patch interrupted by a crash was settled at start: 1 file(s) rolled back (README.md)" in (
        server.stderr
    )
    assert "left as they are, changed since the patch" in server.stderr and "notes.txt" in server.stderr
    assert _journals(tmp_path) == []
    listed = subprocess.run(
        [SWARM_LSP, "audit", "--workspace", str(root), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["tool"], entry["decided_by"]) == ("apply_patch", "recovery")
    assert entry["arguments"]["outcome"] == "rolled back"
    assert entry["arguments"]["restored"] == ["README.md"]
    assert entry["arguments"]["changed_since"] == ["notes.txt"]


@pytest.mark.slow
async def test_the_journal_of_a_live_process_is_left_alone_until_it_dies(bench, tmp_path):
    root = _prepare(bench)
    child = _crash(tmp_path, "1", how="hold")
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        toolbox = bench.toolbox()
        assert toolbox.recovered_patches == []
        assert (root / "notes.txt").read_text() == PATCHED_NOTES, "a live process's patch was undone"
        assert len(_journals(tmp_path)) == 1
    finally:
        child.kill()
    _killed(child)

    toolbox = bench.toolbox()

    _assert_before(root)
    assert [s.direction for s in toolbox.recovered_patches] == ["rolled back"]


async def test_a_journal_cut_short_before_its_manifest_is_removed_without_touching_files(bench, tmp_path):
    root = _prepare(bench)
    dead = tmp_path / "index" / "pending-patches" / f"{2**22 + 11}-{'0' * 16}"
    dead.mkdir(parents=True)
    (dead / "0.before").write_text("not a whole journal")
    toolbox = bench.toolbox()
    assert toolbox.recovered_patches == [] and not dead.exists()
    _assert_before(root)


async def test_a_failure_part_way_restores_the_exact_bytes_and_mode(bench):
    toolbox = bench.toolbox()
    root = toolbox.workspace.root
    odd = "caf\xe9 is Latin-1\n".encode("latin-1")  # not UTF-8: must come back byte for byte
    (root / "odd.txt").write_bytes(odd)
    (root / "gone.txt").write_text("deleted by the patch\n")
    (root / "gone.txt").chmod(0o600)
    patch = (
        "--- a/odd.txt\n+++ b/odd.txt\n@@ -1 +1 @@\n-caf\ufffd is Latin-1\n+now UTF-8\n"
        "--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-deleted by the patch\n"
        "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+x\n"
    )

    class RacingUser(Elicitor):
        """Approves, but new.txt appears while the prompt is open: the patch's last file fails."""

        async def __call__(self, context, params):
            (root / "new.txt").write_text("someone else's\n")
            return await super().__call__(context, params)

    async with connect(toolbox, mode="legacy", elicit=RacingUser("accept")) as client:
        result = await client.call_tool("apply_patch", {"patch": patch})

    assert result.is_error and "already exists" in text(result)
    assert "the 2 file(s) already patched were restored" in text(result)
    assert (root / "odd.txt").read_bytes() == odd
    assert (root / "gone.txt").read_text() == "deleted by the patch\n"
    assert (root / "gone.txt").stat().st_mode & 0o777 == 0o600
    assert (root / "new.txt").read_text() == "someone else's\n"
    assert not any((toolbox.workspace.data_dir / "pending-patches").iterdir())
