"""Faults under the index, made for real: a full disk (a tmpfs of a few hundred kB, mounted by the
test), corrupted and missing LanceDB files, two indexing processes of which one is SIGKILLed at
random points, and a 10,000-file checkout switch under the watcher. docs/reliability.md lists the
promises these tests show."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_indexer import INDEX_SCRIPT, generated_tree, open_workspace
from waiting import wait_until

from swarm_lsp.index.errors import IndexDamaged, IndexDiskFull
from swarm_lsp.workspace import Workspace

pytestmark = pytest.mark.slow


def consistency(ws: Workspace) -> tuple[int, int, int]:
    """(files, chunks, symbols) after checking that no row is duplicated or left without its file."""
    store = ws.store
    files = set(store.files())
    for table in ("chunks", "symbols", "references"):
        paths = set(store._select(table, None, ["path"]).column("path").to_pylist())
        assert paths <= files, f"{table} rows without a files row: {sorted(paths - files)[:5]}"
    ids = store._select("chunks", None, ["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate chunk rows"
    status = ws.status()
    return status.files, status.chunks, status.symbols


def fresh_counts(root: Path, data: Path) -> tuple[int, int, int]:
    with open_workspace(root, data) as fresh:
        fresh.index()
        return consistency(fresh)


# ---------------------------------------------------------------------------------- full disk


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `folder` (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def grow(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def test_a_full_disk_stops_the_sync_with_a_clear_error_and_the_next_one_completes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    generated_tree(root, 400)
    with small_disk(tmp_path / "disk", "1200k") as disk, open_workspace(root, disk / "data") as ws:
        with pytest.raises(IndexDiskFull) as raised:
            ws.index()
        message = str(raised.value)
        assert "is full" in message and "Free some space" in message and str(disk) in message
        # What was written stays readable and consistent, and the status says why the sync stopped.
        files, chunks, _ = consistency(ws)
        assert 0 < files < 400 and chunks > 0
        assert ws.status().sync_error == message
        assert [hit.path for hit in ws.search("function_3_1 Step 1 of module 3", k=3, mode="text")]
        assert temporaries(disk) == [], "half-written temporary files left on the full disk"

        grow(disk, "30m")
        report = ws.index()
        assert report.parsed + report.unchanged == 400
        assert consistency(ws) == fresh_counts(root, tmp_path / "fresh")
        assert ws.status().sync_error is None


def test_the_watcher_backs_off_on_a_full_disk_and_catches_up_when_space_returns(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    generated_tree(root, 60)
    with small_disk(tmp_path / "disk", "30m") as disk, open_workspace(root, disk / "data") as ws:
        ws.index()
        watcher = ws.start_watching(debounce_ms=100)
        grow(disk, f"{disk_used_kb(disk) + 8}k")
        generated_tree(root / "more", 300)
        error = wait_until("the watcher's sync to fail on the full disk", lambda: watcher.error, timeout=120)
        assert "is full" in error
        assert ws.status().sync_error == error

        grow(disk, "60m")
        # No new change is needed: the retry is a whole-tree scan that indexes what the failure left.
        wait_until(
            "the watcher to catch up once space returned",
            lambda: watcher.error is None and ws.status().files >= 360,
            timeout=120,
        )
        assert ws.status().sync_error is None
        assert consistency(ws) == fresh_counts(root, tmp_path / "fresh")


def disk_used_kb(folder: Path) -> int:
    info = os.statvfs(folder)
    return (info.f_blocks - info.f_bfree) * info.f_frsize // 1024


# ---------------------------------------------------------------------------------- corruption


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for index in range(0, len(data), 97):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def damage(index: Path, how: str) -> None:
    table = index / "chunks.lance"
    data_files = sorted((table / "data").glob("*.lance"))
    assert data_files, "the chunks table has no data files to damage"
    for path in data_files:
        if how == "flipped bytes":
            flip_bytes(path)
        elif how == "truncated fragment":
            path.write_bytes(path.read_bytes()[:100])
        elif how == "missing fragment":
            path.unlink()
    if how == "garbage manifests":
        for path in (table / "_versions").iterdir():
            path.write_bytes(b"garbage")


@pytest.mark.parametrize(
    "how", ["flipped bytes", "truncated fragment", "missing fragment", "garbage manifests"]
)
def test_a_damaged_table_is_found_at_open_and_rebuilt_from_the_files(tmp_path: Path, how: str) -> None:
    root, data = tmp_path / "repo", tmp_path / "data"
    generated_tree(root, 80)
    with open_workspace(root, data) as ws:
        ws.index()
        expected = consistency(ws)
    damage(data / "index", how)
    with open_workspace(root, data) as ws:
        status = ws.status()
        assert status.rebuilt_reason is not None and "chunks table" in status.rebuilt_reason
        report = ws.index()
        assert report.parsed == 80
        assert consistency(ws) == expected
        assert ws.search("function_7_3", k=1, mode="text")[0].path == "pkg7/mod7.py"


def test_damage_found_after_open_is_reported_and_rebuilt_by_the_next_sync(tmp_path: Path) -> None:
    root, data = tmp_path / "repo", tmp_path / "data"
    generated_tree(root, 80)
    with open_workspace(root, data) as ws:
        ws.index()
        expected = consistency(ws)
        damage(data / "index", "missing fragment")
        with pytest.raises(IndexDamaged) as raised:
            ws.search("function_7_3", k=1, mode="text")
        assert "rebuilt from the files by the next sync" in str(raised.value)
        report = ws.index()
        assert report.parsed == 80
        assert consistency(ws) == expected
        assert ws.search("function_7_3", k=1, mode="text")[0].path == "pkg7/mod7.py"


# ------------------------------------------------------------------ two writers, one killed


def edit_tree(root: Path, rng: random.Random, round_number: int) -> None:
    """Rewrite a third of the modules, delete a few and add a few, so every round has work."""
    modules = sorted(root.rglob("*.py"))
    for path in rng.sample(modules, len(modules) // 3):
        path.write_text(path.read_text() + f"\n\ndef round_{round_number}():\n    return {round_number}\n")
    for path in rng.sample(modules, 5):
        path.unlink()
    for number in range(5):
        extra = root / "extra" / f"r{round_number}_{number}.py"
        extra.parent.mkdir(exist_ok=True)
        extra.write_text(f"def added_{round_number}_{number}():\n    return {number}\n")


def test_two_indexers_one_killed_at_random_points_leave_no_duplicates_or_orphans(tmp_path: Path) -> None:
    root, data = tmp_path / "repo", tmp_path / "data"
    generated_tree(root, 600)
    rng = random.Random(18)
    command = [sys.executable, "-c", INDEX_SCRIPT, str(root), str(data)]
    for round_number in range(4):
        if round_number:
            edit_tree(root, rng, round_number)
        first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        victim, survivor = (first, second) if rng.random() < 0.5 else (second, first)
        time.sleep(rng.uniform(0.5, 4.0))  # a random point of its work: the fault, not a wait for it
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        output, errors = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, errors[-3000:]
        on_disk = sum(1 for _ in root.rglob("*.py"))
        survived = json.loads(output.strip().splitlines()[-1])
        assert survived["parsed"] + survived["unchanged"] == on_disk
        with open_workspace(root, data) as ws:
            files, _, _ = consistency(ws)
            assert files == on_disk
    assert consistency_of(root, data) == fresh_counts(root, tmp_path / "fresh")


def consistency_of(root: Path, data: Path) -> tuple[int, int, int]:
    with open_workspace(root, data) as ws:
        return consistency(ws)


# ------------------------------------------------------------------ a big checkout switch

CHECKOUT_SCRIPT = textwrap.dedent(
    """
    import json, resource, subprocess, sys, threading, time
    from pathlib import Path
    from swarm_lsp.config import load_settings
    from swarm_lsp.workspace import Workspace

    root, data = Path(sys.argv[1]), sys.argv[2]
    loaded = load_settings(root, {"index": {"location": data}}, env={})
    with Workspace(root, loaded=loaded, embedder=None) as ws:
        ws.index()
        watcher = ws.start_watching()
        before = watcher.syncs
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_before = time.process_time()
        answered, failed, stop = [], [], threading.Event()

        def ask() -> None:
            while not stop.is_set():
                try:
                    answered.append(len(ws.search("compute the total", k=5, mode="text")))
                except Exception as error:
                    failed.append(repr(error))
                time.sleep(0.05)

        asker = threading.Thread(target=ask)
        asker.start()
        subprocess.run(["git", "checkout", "-q", "other"], cwd=root, check=True)
        switched = time.monotonic()
        while time.monotonic() - switched < 240:
            done = watcher.syncs > before and not ws.store.find_symbol("original_9999")
            if done and ws.store.find_symbol("renamed_9999"):
                break
            time.sleep(0.2)
        stop.set()
        asker.join()
        print(json.dumps({
            "syncs": watcher.syncs - before,
            "found": bool(ws.store.find_symbol("renamed_9999")),
            "stale": bool(ws.store.find_symbol("original_9999")),
            "answered": len(answered), "empty": answered.count(0), "failed": failed[:3],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_before_mb": peak_before / 1024,
            "cpu_s": time.process_time() - cpu_before,
            "files": ws.status().files,
        }))
    """
)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_a_10000_file_checkout_switch_is_one_batched_sync_and_search_answers_throughout(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repo"
    for number in range(10_000):
        path = root / f"pkg{number % 50}" / f"mod{number}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"def original_{number}(items):\n    '''Compute the total of {number}.'''\n    return 1\n"
        )
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    git(root, "checkout", "-q", "-b", "other")
    for number in range(10_000):
        path = root / f"pkg{number % 50}" / f"mod{number}.py"
        path.write_text(
            f"def renamed_{number}(items):\n    '''Compute the total of {number}.'''\n    return 2\n"
        )
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "two")
    git(root, "checkout", "-q", "main")

    result = subprocess.run(
        [sys.executable, "-c", CHECKOUT_SCRIPT, str(root), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["found"] and not figures["stale"] and figures["files"] == 10_000
    assert 1 <= figures["syncs"] <= 3, f"{figures['syncs']} syncs for one checkout"
    assert figures["failed"] == [] and figures["answered"] > 0 and figures["empty"] == 0
    assert figures["peak_mb"] < 2048, f"peak RSS {figures['peak_mb']:.0f} MB"
