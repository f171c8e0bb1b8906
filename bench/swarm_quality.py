"""Does the vote help? Accuracy of one sample against 5 and 9 voters, per strategy, on checkable questions.

    python bench/swarm_quality.py [--questions 36] [--max-tokens 64] [--context 1500] [--threads 2]
                                  [--project werkzeug] [--version 3.1.3] [--model PATH.gguf]

Workspace: the `src/` of a pinned sdist (werkzeug 3.1.3 by default, see `_projects.py`), indexed full
text only. Questions are built from the code with `ast`, each with an answer a script can check:

  - "Which file defines the class X?" / "... the function X?": correct when the answer names the
    file (its path under src/, or a path suffix at least as specific as a unique file name);
  - "Which class defines the method M?": correct when the answer names the class (as a word).

Only names defined once in the project are used; a fixed-seed sample of `--questions`, one third of
each kind. Each question gets its context from the index (`--context` tokens), then 9 voters in one
batch (voter 0 greedy, 1-8 sampled at T=0.7). "single" is voter 0 alone; "5 voters" votes over
voters 0-4, "9 voters" over 0-8, with each strategy; "any of 9" is how often at least one voter was
right (what a perfect vote could reach). `exec` applies to code answers only and is not run here.
Prints markdown.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import fresh_copy, load_average, machine_line, project_source

from swarm_lsp.config import load_settings
from swarm_lsp.models.catalog import bundled_model_path
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.swarm.answers import parse_answer
from swarm_lsp.swarm.ballots import Ballot
from swarm_lsp.swarm.engine import SwarmEngine
from swarm_lsp.swarm.prompts import build_messages, stop_strings
from swarm_lsp.swarm.runner import SwarmRunner
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.swarm.voting import vote
from swarm_lsp.workspace import Workspace

STRATEGIES = ("majority", "medoid", "judge")
SIZES = (5, 9)


@dataclass(frozen=True)
class Question:
    kind: str  # "file" | "method"
    text: str
    answer: str
    """The file's path under the workspace, or the class name."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=36)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=1500, help="context budget in tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--project", default="werkzeug")
    parser.add_argument("--version", default="3.1.3")
    parser.add_argument("--model", default="", help="a GGUF file (default: the bundled SmolLM2-135M)")
    return parser.parse_args()


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


async def main() -> int:
    args = parse_args()
    model_path = Path(args.model) if args.model else bundled_model_path()
    if model_path is None or not model_path.is_file():
        raise SystemExit(f"no model file at {model_path}; run `make setup` or pass --model PATH.gguf")
    source = project_source(args.project, args.version)
    started = time.monotonic()
    print(f"# Swarm quality: single sample against 5 and 9 voters ({args.project} {args.version})\n")
    print(f"- {machine_line()}")
    print(f"- load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="swarm-quality-") as scratch:
        root = fresh_copy(source / "src", Path(scratch) / "src")
        questions = build_questions(root, args.questions)
        basenames = Counter(path.name for path in root.rglob("*.py"))
        data = Path(scratch) / "data"
        loaded = load_settings(
            root, {"index": {"location": str(data), "embedder": "none"}}, env={}, user_file=data / "none.toml"
        )
        workspace = Workspace(root, loaded=loaded)
        workspace.index()
        model = LlamaCppBackend(
            model_path,
            n_ctx=4096,
            n_seq_max=max(SIZES),
            n_threads=args.threads,
            generation_reserve=args.max_tokens + 32,
        )
        engine = SwarmEngine([model], temperature=0.7, voter_timeout=600.0)
        runner = SwarmRunner(
            model,
            workspace.retriever,
            root,
            context_length=4096,
            voters=max(SIZES),
            max_tokens=args.max_tokens,
            temperature=0.7,
            voter_timeout=600.0,
        )
        judge = runner._judge(asyncio.get_running_loop(), None)
        print(
            f"- model: {model.info.model}; {len(questions)} questions "
            f"({sum(q.kind == 'file' for q in questions)} which-file, "
            f"{sum(q.kind == 'method' for q in questions)} which-class); context {args.context} tokens, "
            f"{args.max_tokens} new tokens per voter\n"
        )

        hits: Counter[str] = Counter()
        per_kind: dict[str, Counter[str]] = {"file": Counter(), "method": Counter()}
        sampled_right = 0
        for question in questions:
            task = Task(kind="ask", prompt=question.text)
            pack = workspace.context_for(question.text, args.context)
            messages = build_messages(task, pack.render(), context_citations=pack.citations)
            generated = await engine.generate(
                messages, max(SIZES), max_tokens=args.max_tokens, stop=stop_strings(task)
            )
            answers = [parse_answer(task, c.text).text for c in generated.candidates]
            right = [correct(question, a, basenames) for a in answers]
            outcome = {"single (voter 0, greedy)": right[0], "any of 9 (oracle)": any(right)}
            sampled_right += sum(right[1:])
            by_index = {c.index: ok for c, ok in zip(generated.candidates, right, strict=True)}
            ballots = [
                Ballot(c.index, a, valid=bool(a.strip()))
                for c, a in zip(generated.candidates, answers, strict=True)
            ]
            for size in SIZES:
                for strategy in STRATEGIES:
                    result = await asyncio.to_thread(
                        vote, ballots[:size], strategy, judge=judge, question=question.text
                    )
                    won = result.winner is not None and by_index[result.winner]
                    outcome[f"{size} voters, {strategy}"] = won
            for label, ok in outcome.items():
                hits[label] += ok
                per_kind[question.kind][label] += ok
        total = len(questions)
        files = sum(q.kind == "file" for q in questions)
        methods = total - files
        print("| answered by | accuracy | which file | which class |")
        print("|---|---:|---:|---:|")
        sampled = sampled_right / (total * (max(SIZES) - 1))
        print(f"| one sampled voter (T=0.7, mean of voters 1-8) | {sampled:.2f} | | |")
        for label in hits:
            print(
                f"| {label} | {hits[label] / total:.2f} ({hits[label]}/{total}) | "
                f"{per_kind['file'][label] / files:.2f} | {per_kind['method'][label] / methods:.2f} |"
            )
        print(f"\n- wall time {time.monotonic() - started:.0f} s; load average after: {load_average()}")
        await model.aclose()
        workspace.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(asyncio.run(main()))
