"""What the HTTP API adds: the same 5-voter question in-process and through `swarm-lsp api`.

    python bench/api_overhead.py [--runs 9] [--voters 5] [--max-tokens 96] [--workspace PATH]

In one run, in rotating order round by round: `Workspace.run` in this process, and the official `openai`
client against a real `swarm-lsp api` process on a loopback port (plain and streamed), both with
the bundled model, the same settings, the same grounded question and the same seeds, so both
paths decode the same tokens. Goal (issue 12): the API adds at most 2% wall time, and the first
streamed byte after the vote comes within 50 ms.

"After the vote" is measured from the client: the first `data:` line's arrival minus the
request's start minus the server's own swarm time (`swarm_lsp.timings.total`). That difference
also holds HTTP parsing, the queue and the JSON encoding, so it is an upper bound.

What the API adds is measured the same way for the plain requests: wall time through the API minus the
server's swarm time. The two paths' wall medians are printed too, but on a busy 2-core machine one
generation varies by several percent from run to run, more than the API's cost, so their difference
is mostly that noise (the spread of the in-process runs is printed beside it). Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai

from swarm_lsp.config import load_settings
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Which class loads a GGUF model with llama.cpp, and how does it decode several voters at once?"
GOAL_OVERHEAD = 0.02
GOAL_AFTER_VOTE_S = 0.050


def settings_env(cache: Path, voters: int, max_tokens: int) -> dict[str, str]:
    return {
        "SWARM_LSP_CONFIG_FILE": str(cache / "no-user-config.toml"),
        "SWARM_LSP_CACHE_DIR": str(cache),
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": "2048",
        "SWARM_LSP_SWARM__VOTERS": str(voters),
        "SWARM_LSP_SWARM__MAX_TOKENS": str(max_tokens),
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_INDEX__WATCH": "false",
    }


def start_api(workspace: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    swarm_lsp = str(Path(sys.executable).with_name("swarm-lsp"))
    process = subprocess.Popen(
        [swarm_lsp, "api", "--workspace", str(workspace), "--port", "0"],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            match = re.search(r"swarm-lsp API at (http://\S+)", line)
            if match:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(120) or not found:
        process.kill()
        raise SystemExit("swarm-lsp api did not start")
    return process, found[0]


CHILD = """
import asyncio, json, sys, time
sys.path.insert(0, {bench!r})
import api_overhead as bench
from swarm_lsp.config import load_settings
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.workspace import Workspace
root = __import__("pathlib").Path({root!r})
workspace = Workspace(root, loaded=load_settings(root))
walls = []
for _ in range({runs} + 1):
    started = time.perf_counter()
    asyncio.run(workspace.run(Task(kind="chat", prompt=bench.QUESTION)))
    walls.append(time.perf_counter() - started)
workspace.close()
print(json.dumps(walls[1:]))
"""


def in_another_process(workspace: Path, runs: int) -> list[float]:
    """Wall times of `Workspace.run` in a fresh plain Python process (no HTTP): the same work as
    in-process, to show how much decoding speed differs from one process to another."""
    code = CHILD.format(bench=str(Path(__file__).parent), root=str(workspace), runs=runs)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def streamed(url: str) -> tuple[float, float]:
    """(wall seconds, first data byte after the server's swarm time) of one streamed request."""
    body = {"model": "swarm", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    started = time.perf_counter()
    first_data = None
    last = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and first_data is None:
                first_data = time.perf_counter() - started
            if line.startswith("data: {"):
                last = line
    wall = time.perf_counter() - started
    swarm_total = json.loads(last[len("data: ") :])["swarm_lsp"]["timings"]["total"]
    assert first_data is not None
    return wall, first_data - swarm_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--voters", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--workspace", type=Path, default=ROOT)
    args = parser.parse_args()

    load_before = os.getloadavg()
    cache = Path(tempfile.mkdtemp(prefix="swarm-lsp-api-bench-"))
    env = settings_env(cache, args.voters, args.max_tokens)
    os.environ.update(env)
    workspace = Workspace(args.workspace, loaded=load_settings(args.workspace))
    workspace.index(embed=False)
    other_process = in_another_process(args.workspace, args.runs)
    process, url = start_api(args.workspace, env)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    task = lambda: Task(kind="chat", prompt=QUESTION)  # noqa: E731 - a fresh task per run

    swarm_time: dict[str, list[float]] = {"direct": [], "api": []}

    async def in_process() -> float:
        started = time.perf_counter()
        result = await workspace.run(task(), door="bench")
        swarm_time["direct"].append(result.timings["total"])
        return time.perf_counter() - started

    def through_api() -> float:
        started = time.perf_counter()
        answer = client.chat.completions.create(
            model="swarm", messages=[{"role": "user", "content": QUESTION}]
        )
        swarm_time["api"].append(answer.model_extra["swarm_lsp"]["timings"]["total"])
        return time.perf_counter() - started

    try:
        asyncio.run(in_process())  # warm-up: model load, first retrieval
        through_api()
        direct, api, stream, after_vote = [], [], [], []

        def run_streamed() -> None:
            wall, after = streamed(url)
            stream.append(wall)
            after_vote.append(after)

        paths = [
            lambda: direct.append(asyncio.run(in_process())),
            lambda: api.append(through_api()),
            run_streamed,
        ]
        for round_number in range(args.runs):
            # Each path goes first, second and third in turn: a run right after another process's
            # generation is slower (caches, the other process's threads winding down).
            turn = round_number % len(paths)
            for path in paths[turn:] + paths[:turn]:
                path()
    finally:
        process.terminate()
        process.wait(30)
        workspace.close()
    load_after = os.getloadavg()

    base = statistics.median(direct)
    print(
        f"## API overhead: {args.voters} voters, {args.max_tokens} tokens, bundled model, {args.runs} runs\n"
    )
    print("| path | median s | min s | max s | vs in-process | of which the swarm, s |")
    print("|---|---:|---:|---:|---:|---:|")
    swarm_direct = statistics.median(swarm_time["direct"][1:])
    swarm_api = statistics.median(swarm_time["api"][1:])
    for name, times, swarm in (("Workspace.run (in-process)", direct, swarm_direct),
                               ("Workspace.run in another plain process", other_process, None),
                               ("HTTP API, openai client", api, swarm_api),
                               ("HTTP API, streamed", stream, None)):  # fmt: skip
        change = (statistics.median(times) - base) / base
        inside = "" if swarm is None else f"{swarm:.3f}"
        print(
            f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | "
            f"{change:+.1%} | {inside} |"
        )
    outside = [a - s for a, s in zip(api, swarm_time["api"][1:], strict=True)]
    added = statistics.median(outside) / base
    after_ms = statistics.median(after_vote) * 1000
    worst_ms = max(after_vote) * 1000
    goal_ms = GOAL_AFTER_VOTE_S * 1000
    spread = statistics.stdev(direct) / statistics.mean(direct) if len(direct) > 1 else 0.0
    difference = (statistics.median(api) - base) / base
    verdict = "met" if added <= GOAL_OVERHEAD else "not met"
    print()
    print(
        f"- time the API adds (wall through the API minus the server's own swarm time: HTTP, JSON, queue): "
        f"median {statistics.median(outside) * 1000:.1f} ms, {added:.2%} of the in-process time "
        f"(goal <= {GOAL_OVERHEAD:.0%}: {verdict})"
    )
    print(
        f"- first streamed byte after the vote: median {after_ms:.1f} ms, max {worst_ms:.1f} ms "
        f"(upper bound; goal < {goal_ms:.0f} ms)"
    )
    print(
        f"- wall medians differ by {difference:+.1%}; the in-process runs alone spread {spread:.1%} "
        "(standard deviation / mean); the same runs in another plain process differ by "
        f"{(statistics.median(other_process) - base) / base:+.1%}: decoding speed differs from one process "
        "to another by about as much, with no HTTP involved"
    )
    print(f"- load average before: {load_before[0]:.2f}; after: {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
