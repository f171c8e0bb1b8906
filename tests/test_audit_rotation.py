"""The audit log rotates by size, keeps N files, and is read across its rotations in order."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from swarm_lsp.tools.audit import AuditLog, read_audit, rotated


def _write(path: str, start: int, count: int) -> None:
    log = AuditLog(Path(path), max_bytes=2_000, keep=1000)
    for number in range(start, start + count):
        log.append({"n": number, "tool": "read_file", "padding": "x" * 40})


def test_rotation_keeps_n_files_and_reading_spans_them_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1_000, keep=3)
    for number in range(100):
        log.append({"n": number, "padding": "x" * 30})
    assert path.stat().st_size <= 1_000
    assert [rotated(path, n).exists() for n in (1, 2, 3, 4)] == [True, True, True, False]
    numbers = [entry["n"] for entry in read_audit(path)]
    assert numbers == sorted(numbers) and numbers[-1] == 99, "oldest first, newest last"
    assert len(numbers) < 100, "what is past the kept files is gone"
    assert numbers == list(range(numbers[0], 100)), "no entry lost inside the kept window"


def test_threads_and_processes_writing_at_once_lose_and_tear_no_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads = [threading.Thread(target=_write, args=(str(path), 1000 * t, 200)) for t in range(3)]
    processes = [
        multiprocessing.get_context("spawn").Process(target=_write, args=(str(path), 10_000 * (p + 1), 200))
        for p in range(2)
    ]
    for worker in [*threads, *processes]:
        worker.start()
    for worker in [*threads, *processes]:
        worker.join(120)
    entries = list(read_audit(path))
    assert len(entries) == 1000 and len({entry["n"] for entry in entries}) == 1000
    assert all(rotated(path, n).stat().st_size <= 2_000 for n in range(1, 5) if rotated(path, n).exists())
