"""The soak benchmark (bench/soak.py) shortened to two minutes: real `swarm-lsp serve` and
`swarm-lsp mcp` processes on one workspace, editor, agent and disk traffic at once. The 30-minute
figures are in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def test_two_minutes_of_mixed_traffic_serve_every_request_and_leak_nothing(tmp_path: Path) -> None:
    figures_file = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--minutes",
            "2",
            "--scratch",
            str(tmp_path / "run"),
            "--json",
            str(figures_file),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    served = {row["kind"]: row["served"] for row in figures["requests"]}
    # Every lane ran: editor (code actions and both model commands), agent (reads and writes), disk.
    for kind in (
        "lsp codeAction",
        "lsp swarm.explain",
        "lsp swarm.chat",
        "mcp search_code",
        "mcp write_file",
    ):
        assert served.get(kind, 0) > 0, f"no {kind} was served: {served}"
    assert served.get("disk edit -> searchable", 0) > 0
    assert figures["errors"] == {}, figures["errors"]
    assert figures["temporaries_at_end"] == []
    for process in figures["processes"]:
        # Two minutes hold two of the store's 60 s reconnections and lance's worker pool still
        # growing: a leak per request would show as many times the half-time count, not a few more.
        for what in ("threads", "fds"):
            assert process[f"{what}_end"] <= 1.5 * process[f"{what}_first_half_peak"] + 10, (what, process)
        # Two minutes are too short to judge the 10% goal of the long run; a leak per request is not.
        assert process["rss_growth"] < 0.5, process
