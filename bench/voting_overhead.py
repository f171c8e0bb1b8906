"""What voting costs: milliseconds per strategy on synthetic candidates, no model involved.

    python bench/voting_overhead.py [--tokens 400] [--repeat 3]

5 and 9 candidates of about `--tokens` tokens each, best of `--repeat` runs. `majority` votes on
short yes/no answers, `majority (long)` on the long texts; `judge` uses a stub judge, so its row is
prompt building, parsing and medoid agreement, not the model's time; `exec` runs every candidate
with 2 tests and 2 inputs in one subprocess. Prints markdown.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from swarm_lsp.swarm.ballots import Ballot, VoteResult
from swarm_lsp.swarm.exec_vote import ExecSpec
from swarm_lsp.swarm.voting import vote


def bench_overhead(
    sizes: Sequence[int] = (5, 9), tokens: int = 400, repeat: int = 3
) -> list[tuple[str, int, float]]:
    """Voting overhead per strategy: (strategy, candidates, best-of-`repeat` milliseconds).

    Synthetic candidates of about `tokens` tokens each; the judge is a stub, so its row is the
    prompt building, parsing and medoid agreement, not the model's time. The exec row runs every
    candidate with 2 tests (an assert and a `test_` function) and 2 inputs in one subprocess.
    """
    rows = []
    for n in sizes:
        texts = _bench_texts(n, tokens, random.Random(n))
        prose = [Ballot(i, t) for i, t in enumerate(texts)]
        short = [Ballot(i, ["yes", "Yes.", "no", "**yes**"][i % 4]) for i in range(n)]
        code = [Ballot(i, "", code=_bench_code(i, tokens)) for i in range(n)]
        spec = ExecSpec(
            tests=("assert f(3) == 3 * 4", "def test_zero():\n    assert f(0) == 0\n"),
            inputs=("f(5)", "f(7)"),
        )

        def stub_judge(prompt: str) -> str:
            return "The most consistent response is Response 2"

        cases: list[tuple[str, Callable[[], VoteResult]]] = [
            ("majority", lambda short=short: vote(short, "majority")),
            ("majority (long)", lambda prose=prose: vote(prose, "majority")),
            ("medoid", lambda prose=prose: vote(prose, "medoid")),
            ("judge", lambda prose=prose: vote(prose, "judge", judge=stub_judge)),
            ("exec", lambda code=code, spec=spec: vote(code, "exec", task_kind="refactor", exec_spec=spec)),
        ]
        for name, run in cases:
            best = float("inf")
            for _ in range(repeat):
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            rows.append((name, n, best * 1000))
    return rows


def _bench_texts(n: int, tokens: int, rng: random.Random) -> list[str]:
    words = [f"word{k}" for k in range(120)] + ["the", "a", "of", "to", "(", ")", ".", ","]
    base = [rng.choice(words) for _ in range(tokens)]
    texts = []
    for _ in range(n):
        mine = list(base)
        for _ in range(tokens // 6):
            mine[rng.randrange(tokens)] = rng.choice(words)
        texts.append(" ".join(mine))
    return texts


def _bench_code(i: int, tokens: int) -> str:
    lines = ["def f(x):", "    total = 0"]
    # Each line is about 12 tokens; candidate i differs in one constant, so outputs split in groups.
    for k in range(max(1, tokens // 12)):
        lines.append(f"    total = total + x * {k % 7} - x * {k % 7}  # step {k}")
    lines.append(f"    return total + x * {4 if i % 3 else 5}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=400, help="tokens per candidate")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best one counts")
    args = parser.parse_args()
    print("| strategy | candidates | ms |")
    print("|---|---:|---:|")
    for strategy, n, ms in bench_overhead(tokens=args.tokens, repeat=args.repeat):
        print(f"| {strategy} | {n} | {ms:.2f} |")


if __name__ == "__main__":
    main()
