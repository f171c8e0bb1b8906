"""Atomic writes: a process killed mid-write leaves the old file (or the whole new one), never a mix,
and the temp file it leaves is removed when a server next starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_mcp_support import Bench

from swarm_lsp.tools.atomic import TEMP_SUFFIX, FileChanged, Stamp, WriteJournal, atomic_write
from swarm_lsp.tools.sandbox import Sandbox

WRITER = """
import sys
from pathlib import Path
from swarm_lsp.tools.atomic import WriteJournal, atomic_write
from swarm_lsp.tools.sandbox import Sandbox

root, journal, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
sandbox = Sandbox([root], workspace_root=root)
atomic_write(sandbox, sandbox.resolve("target.bin", write=True), b"N" * size, WriteJournal(journal))
print("finished", flush=True)
"""
OLD = b"O" * 4096


def _temp_files(root: Path) -> list[Path]:
    return [path for path in root.iterdir() if path.name.endswith(TEMP_SUFFIX)]


@pytest.mark.slow
def test_a_write_killed_midway_leaves_the_old_file_and_its_temp_file_is_cleaned_at_start(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    target = root / "target.bin"
    target.write_bytes(OLD)
    journal = tmp_path / "index" / "pending-writes"
    size = 400 * 1024 * 1024
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(journal), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once the temp file has started to fill
        temps = _temp_files(root)
        if temps and temps[0].stat().st_size > 0:
            break
        time.sleep(0.001)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(30)
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read().decode()
    content = target.read_bytes()
    assert content == OLD or content == b"N" * size, "the target holds a mix of old and new bytes"
    assert content == OLD, "the write finished before the kill: the test did not interrupt it"
    assert _temp_files(root), "the kill left no temp file: nothing to clean up"

    bench = Bench(tmp_path)
    toolbox = bench.toolbox(root=root)  # start() recovers the journal of the index folder
    try:
        assert not _temp_files(root)
        assert not list(journal.glob("*.json"))
        assert target.read_bytes() == OLD
    finally:
        toolbox.close()
        toolbox.workspace.close()


def test_readers_see_the_old_or_the_new_file_never_a_mix(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    sandbox = Sandbox([root], workspace_root=root)
    safe = sandbox.resolve("data.txt", write=True)
    versions = [bytes([65 + n]) * 200_000 for n in range(8)]
    (root / "data.txt").write_bytes(versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = (root / "data.txt").read_bytes()
            seen.add(data[:1] * len(data) if data == data[:1] * len(data) else b"MIXED")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in versions[1:] * 3:
            atomic_write(sandbox, safe, version, WriteJournal(tmp_path / "journal"))
    finally:
        stop.set()
        reader.join()
    assert b"MIXED" not in seen
    assert not _temp_files(root)


def test_exclusive_create_and_expected_stamp_refuse_a_file_that_changed(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    sandbox = Sandbox([root], workspace_root=root)
    journal = WriteJournal(tmp_path / "journal")
    safe = sandbox.resolve("sub/new.txt", write=True)
    atomic_write(sandbox, safe, b"first", journal, exclusive=True)  # creates sub/ too
    with pytest.raises(FileExistsError):
        atomic_write(sandbox, safe, b"second", journal, exclusive=True)
    stamp = Stamp.of(os.stat(root / "sub" / "new.txt"))
    time.sleep(0.01)  # a later mtime too, as an edit by another program has
    (root / "sub" / "new.txt").write_bytes(b"edited elsewhere")
    with pytest.raises(FileChanged):
        atomic_write(sandbox, safe, b"third", journal, expect=stamp)
    assert (root / "sub" / "new.txt").read_bytes() == b"edited elsewhere"
    assert not list((tmp_path / "journal").glob("*.json")) and not _temp_files(root / "sub")


def test_a_write_keeps_the_file_mode(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    script = root / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    sandbox = Sandbox([root], workspace_root=root)
    atomic_write(
        sandbox, sandbox.resolve("run.sh", write=True), b"#!/bin/sh\necho hi\n", WriteJournal(tmp_path / "j")
    )
    assert script.stat().st_mode & 0o777 == 0o755


def test_recovery_leaves_the_temp_files_of_live_writers_alone(tmp_path):
    journal = WriteJournal(tmp_path / "journal")
    live = tmp_path / f".a.txt.0123456789ab{TEMP_SUFFIX}"
    live.write_text("in flight")
    journal.begin(live)  # this process is alive
    dead = tmp_path / f".b.txt.ba9876543210{TEMP_SUFFIX}"
    dead.write_text("orphan")
    (tmp_path / "journal" / "1-dead.json").write_text(f'{{"pid": {2**22 + 7}, "temp": "{dead}"}}')
    victim = tmp_path / "important.txt"
    victim.write_text("keep")
    (tmp_path / "journal" / "2-forged.json").write_text(f'{{"pid": {2**22 + 9}, "temp": "{victim}"}}')
    assert journal.recover() == [dead]
    assert live.exists() and victim.read_text() == "keep" and not dead.exists()
