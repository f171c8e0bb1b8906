"""A no-change re-index of a 10,000+-file tree, full-text only (no embedder).

    python bench/index_nochange.py [--project django] [--version 5.1.4] [--min-files 10000] [--repeats 5]

The tree is the pinned sdist (Django 5.1.4 by default, every file of it: code, docs, tests,
locale files); where one copy has fewer than `--min-files` files, whole copies of it go into
sibling folders (copy-1/, copy-2/, ...) until the tree has enough, and the output says so.

  1. first full index: `Workspace.index()` into an empty index folder;
  2. the no-change re-run as the sync call alone, on the open workspace, `--repeats` times
     (zero files may be parsed or embedded; the benchmark checks);
  3. the same as the whole CLI process, `swarm-lsp index --json` (interpreter start, imports, the
     sync, the status it prints), `--repeats` times. A no-change re-run is answered there from
     the manifest the last full sync left (swarm_lsp/index/manifest.py) without opening the
     index; its "sync" is that check.

Goal: a no-change re-run under 2 s. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import count_files, fresh_copy, load_average, machine_line, project_source, scratch_dir

from swarm_lsp.config import load_settings
from swarm_lsp.workspace import Workspace

GOAL_S = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default="django")
    parser.add_argument("--version", default="5.1.4")
    parser.add_argument("--min-files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def build_tree(source: Path, scratch: Path, min_files: int) -> tuple[Path, int, int]:
    """The workspace root, the number of copies in it and its file count."""
    per_copy = count_files(source) - 1  # the cache's `.complete` marker is not copied
    copies = max(1, -(-min_files // per_copy))
    root = scratch / "tree"
    if copies == 1:
        fresh_copy(source, root)
    else:
        root.mkdir()
        for number in range(1, copies + 1):
            fresh_copy(source, root / f"copy-{number}")
    return root, copies, count_files(root)


def cli_run(root: Path, data: Path) -> tuple[float, dict]:
    env = dict(os.environ)
    env.update(
        {
            "SWARM_LSP_CONFIG_FILE": "/nonexistent/swarm-lsp.toml",
            "SWARM_LSP_INDEX__LOCATION": str(data),
            "SWARM_LSP_INDEX__EMBEDDER": "none",
        }
    )
    script = Path(sys.executable).parent / "swarm-lsp"
    launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "swarm_lsp"]
    command = [*launcher, "index", "--workspace", str(root), "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stderr}")
    return elapsed, json.loads(result.stdout)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} | {max(values):.3f}"


def main() -> int:
    args = parse_args()
    load_before = load_average()
    source = project_source(args.project, args.version)
    scratch = scratch_dir("index_nochange")
    root, copies, files = build_tree(source, scratch, args.min_files)
    data = scratch / "data"
    loaded = load_settings(
        root,
        {"index": {"location": str(data), "embedder": "none"}},
        env={},
        user_file=Path("/nonexistent"),
    )

    workspace = Workspace(root, loaded=loaded, embedder=None)
    started = time.perf_counter()
    first = workspace.index(embed=True)
    first_s = time.perf_counter() - started
    status = workspace.status()

    sync_times: list[float] = []
    scan_times: list[float] = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        report = workspace.index(embed=True)
        sync_times.append(time.perf_counter() - started)
        scan_times.append(report.seconds.get("scan", 0.0))
        assert report.parsed == 0 and report.embedded == 0 and report.deleted == 0, report
        assert report.unchanged == status.files, (report.unchanged, status.files)
    workspace.close()

    cli_times: list[float] = []
    cli_sync_times: list[float] = []
    for _ in range(args.repeats):
        elapsed, output = cli_run(root, data)
        sync = output["sync"]
        assert sync["parsed"] == 0 and sync["embedded"] == 0 and sync["deleted"] == 0, sync
        cli_times.append(elapsed)
        cli_sync_times.append(sync["seconds"]["total"])
    load_after = load_average()

    layout = (
        f"{copies} copies of the sdist in sibling folders copy-1 .. copy-{copies} "
        f"(one copy has {(files // copies):,} files, fewer than {args.min_files:,})"
        if copies > 1
        else "the sdist as is"
    )
    print(f"# No-change re-index, full-text only: {args.project} {args.version}\n")
    print(f"- machine: {machine_line()}")
    print(f"- load average before: {load_before}; after: {load_after}")
    print(f"- tree: {files:,} files, {layout}; under {scratch}")
    print(
        f"- indexed: {status.files:,} files, {status.chunks:,} chunks, {status.symbols:,} symbols; "
        f"{len(first.skipped):,} files skipped (binary, too large or ignored); "
        f"index {status.disk_bytes / 1e6:.1f} MB"
    )
    seconds = first.seconds
    print(
        f"\n**first full index: {first_s:.1f} s** (scan {seconds.get('scan', 0):.1f}, "
        f"parse {seconds.get('parse', 0):.1f}, write {seconds.get('write', 0):.1f}, "
        f"other {first_s - sum(seconds.get(k, 0) for k in ('scan', 'parse', 'write')):.1f})\n"
    )
    print(f"no-change re-run, {args.repeats} runs each (0 parsed, 0 embedded, 0 deleted every time):\n")
    print("| measured as | median s | max s |")
    print("|---|---:|---:|")
    print(f"| `Workspace.index()` call, open workspace | {summary(sync_times)} |")
    print(f"| of which scan (walk + stat + compare) | {summary(scan_times)} |")
    print(f"| `swarm-lsp index --json` whole process | {summary(cli_times)} |")
    print(f"| of which the sync inside it | {summary(cli_sync_times)} |")
    worst = max(max(sync_times), max(cli_times))
    verdict = "met" if worst < GOAL_S else "NOT met"
    print(
        f"\ngoal: under {GOAL_S:.0f} s for a no-change re-run (max over every run {worst:.2f} s: {verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
