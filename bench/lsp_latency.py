"""The language server's interactive costs: code action listing, didChange, and Explain's first text.

    python bench/lsp_latency.py [--requests 1000] [--keystrokes 1000] [--explain-runs 3] [--voters 2]

Setup: a scratch workspace with one generated 2,000-line Python file (functions with docstrings, a
few non-ASCII lines) and `swarm-lsp serve` started over stdio as a subprocess, on the bundled model
(SmolLM2-135M), full-text index only. The client is pygls' LanguageClient with VS Code-like
capabilities (UTF-16 positions, codeAction/resolve, work-done progress).

- Listing: `--requests` textDocument/codeAction requests, one after another, each at another place
  in the file (every tenth with a diagnostic); the round trip of each is timed (client send to
  response parsed). Goal: p95 under 5 ms. The server-side cost alone (`actions.list_actions`, in
  process) is measured too.
- didChange: `--keystrokes` one-character incremental changes sent back to back, then one request;
  the time until its answer, divided by the keystrokes, bounds what a keystroke costs the server
  (parse, apply, reschedule the buffer's indexing). In process: `Document.apply_change` alone.
- Explain: `swarm.explain` on a 20-line function; the time from sending the command to the first
  `swarm/chatChunk` with text, and to the result, with the core's own split (retrieval, which
  includes compressing a context larger than the window, and generation). The first run includes
  loading the model.

Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lsp_client import BenchClient
from _projects import load_average, machine_line, scratch_dir
from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

from swarm_lsp.lsp import actions
from swarm_lsp.lsp.documents import Document

GOAL_LISTING_P95_MS = 5.0
FILE_LINES = 2000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="code action requests timed")
    parser.add_argument("--keystrokes", type=int, default=1000, help="didChange notifications sent")
    parser.add_argument("--explain-runs", type=int, default=3, help="swarm.explain runs (the first is cold)")
    parser.add_argument("--voters", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=2048, help="model.context_length (0: what fits)")
    return parser.parse_args()


def generated_file(lines: int = FILE_LINES) -> str:
    """A Python module of `lines` lines: functions of 10 lines, some with non-ASCII text."""
    out: list[str] = []
    number = 0
    while len(out) < lines:
        accent = "é 😀" if number % 7 == 0 else "plain"
        out += [
            f"def step_{number}(values, scale={number}):",
            f'    """Scale the values ({accent}) and keep the positive ones."""',
            "    kept = []",
            "    for value in values:",
            "        scaled = value * scale",
            "        if scaled > 0:",
            "            kept.append(scaled)",
            "    return kept",
            "",
            "",
        ]
        number += 1
    return "\n".join(out[:lines]) + "\n"


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return p50, p95, ordered[-1]


def capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(
            work_done_progress=True, show_document=types.ShowDocumentClientCapabilities(support=True)
        ),
        text_document=types.TextDocumentClientCapabilities(
            code_action=types.CodeActionClientCapabilities(
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]),
                data_support=True,
            )
        ),
        workspace=types.WorkspaceClientCapabilities(
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True)
        ),
    )


class Client(BenchClient):
    def __init__(self) -> None:
        super().__init__("swarm-lsp-bench")
        self.first_text_at: float | None = None

        @self.lsp.feature("swarm/chatChunk")
        def chunk(ls: LanguageClient, params: Any) -> None:
            text = params.text if hasattr(params, "text") else params["text"]
            if self.first_text_at is None and text.strip():
                self.first_text_at = time.perf_counter()

        @self.lsp.feature(types.WINDOW_SHOW_DOCUMENT)
        def show(ls: LanguageClient, params: types.ShowDocumentParams) -> types.ShowDocumentResult:
            return types.ShowDocumentResult(success=True)

        @self.lsp.feature(types.WINDOW_SHOW_MESSAGE)
        def message(ls: LanguageClient, params: types.ShowMessageParams) -> None:
            return None

        @self.lsp.feature(types.WORKSPACE_CONFIGURATION)
        def configuration(ls: LanguageClient, params: types.ConfigurationParams) -> list[None]:
            return [None for _ in params.items]


async def bench_listing(client: Client, uri: str, text: str, count: int) -> list[float]:
    lines = text.split("\n")
    rng = random.Random(7)
    samples = []
    for index in range(count):
        row = rng.randrange(0, len(lines) - 12)
        selection = types.Range(start=types.Position(row, 0), end=types.Position(row + 8, 0))
        diagnostics = []
        if index % 10 == 0:
            diagnostics = [types.Diagnostic(range=selection, message=f"problem {index}", source="bench")]
        params = types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=selection,
            context=types.CodeActionContext(diagnostics=diagnostics),
        )
        started = time.perf_counter()
        listed = await client.lsp.text_document_code_action_async(params)
        samples.append(time.perf_counter() - started)
        assert listed and listed[-1].title == "Ask about this code"
    return samples


def bench_listing_in_process(uri: str, count: int) -> list[float]:
    rng = random.Random(7)
    samples = []
    for _ in range(count):
        row = rng.randrange(0, FILE_LINES - 12)
        params = types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(row, 0), end=types.Position(row + 8, 0)),
            context=types.CodeActionContext(diagnostics=[]),
        )
        started = time.perf_counter()
        actions.list_actions(params, resolve=True, version=1)
        samples.append(time.perf_counter() - started)
    return samples


async def bench_keystrokes(client: Client, uri: str, text: str, count: int) -> float:
    """Seconds per keystroke: `count` one-character changes, then a request; total / count."""
    row = text.split("\n").index("def step_100(values, scale=100):") + 1
    version = 1
    started = time.perf_counter()
    for index in range(count):
        version += 1
        column = 4 + index
        client.lsp.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(row, column), end=types.Position(row, column)),
                        text="x",
                    )
                ],
            )
        )
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(row, 0), end=types.Position(row, 0)),
        context=types.CodeActionContext(diagnostics=[]),
    )
    listed = await client.lsp.text_document_code_action_async(params)
    elapsed = time.perf_counter() - started
    assert listed[0].data["version"] == version, "the server saw every change"
    return elapsed / count


def bench_keystrokes_in_process(text: str, count: int) -> list[float]:
    document = Document.from_text("file:///bench.py", text, 1)
    rng = random.Random(11)
    samples = []
    for index in range(count):
        row = rng.randrange(0, FILE_LINES - 1)
        column = rng.randrange(0, 8)
        change = types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(row, column), end=types.Position(row, column)), text="x"
        )
        started = time.perf_counter()
        document.apply_change(change, index + 2)
        samples.append(time.perf_counter() - started)
    return samples


async def bench_explain(client: Client, uri: str, runs: int) -> list[tuple[float, float, Any]]:
    results = []
    for run in range(runs):
        row = 200 + 40 * run  # another function each time: no answer is reused
        arguments = {
            "uri": uri,
            "range": {"start": {"line": row, "character": 0}, "end": {"line": row + 20, "character": 0}},
        }
        client.first_text_at = None
        started = time.perf_counter()
        params = types.ExecuteCommandParams(
            command="swarm.explain", arguments=[arguments], work_done_token=f"explain-{run}"
        )
        result = await client.lsp.workspace_execute_command_async(params)
        done = time.perf_counter()
        first = (client.first_text_at or done) - started
        results.append((first, done - started, result))
    return results


async def main() -> None:
    args = parse_args()
    scratch = scratch_dir("lsp-latency")
    root = scratch / "workspace"
    root.mkdir()
    text = generated_file()
    (root / "big.py").write_text(text)
    env = {
        **os.environ,
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_INDEX__LOCATION": str(scratch / "data"),
        "SWARM_LSP_CONFIG_FILE": str(scratch / "no-user-config.toml"),
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": str(args.context),
        "SWARM_LSP_SWARM__VOTERS": str(args.voters),
        "SWARM_LSP_SWARM__MAX_TOKENS": str(args.max_tokens),
    }
    client = Client()
    await client.start(root, env, capabilities(), timeout=300)
    uri = from_fs_path(str(root / "big.py"))
    item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
    client.lsp.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))

    await bench_listing(client, uri, text, 50)  # warm-up
    listing = await bench_listing(client, uri, text, args.requests)
    listing_local = bench_listing_in_process(uri, args.requests)
    per_keystroke = await bench_keystrokes(client, uri, text, args.keystrokes)
    keystroke_local = bench_keystrokes_in_process(text, args.keystrokes * 10)
    explains = await bench_explain(client, uri, args.explain_runs)
    await client.stop()

    lp50, lp95, lmax = percentiles(listing)
    cp50, cp95, _ = percentiles(listing_local)
    kp50, kp95, _ = percentiles(keystroke_local)
    verdict = "met" if lp95 * 1000 < GOAL_LISTING_P95_MS else "missed"
    print("### Language server latency\n")
    print(
        f"`python bench/lsp_latency.py --requests {args.requests} --keystrokes {args.keystrokes} "
        f"--explain-runs {args.explain_runs} --voters {args.voters} --max-tokens {args.max_tokens} "
        f"--context {args.context}`\n"
    )
    print(
        f"{machine_line()}; load average {load_average()}; "
        f"a {FILE_LINES}-line Python file, UTF-16 positions.\n"
    )
    print("| measure | p50 | p95 | max / note |")
    print("| --- | --- | --- | --- |")
    print(
        f"| code action listing, round trip over stdio ({args.requests} requests) | {lp50 * 1000:.2f} ms | "
        f"{lp95 * 1000:.2f} ms | max {lmax * 1000:.2f} ms; "
        f"goal p95 < {GOAL_LISTING_P95_MS:.0f} ms: {verdict} |"
    )
    print(
        f"| code action listing, server side only (in process) | {cp50 * 1e6:.0f} µs | "
        f"{cp95 * 1e6:.0f} µs | |"
    )
    print(
        f"| didChange, one keystroke, end to end ({args.keystrokes} sent back to back) | "
        f"{per_keystroke * 1e6:.0f} µs (mean) | | includes the pipe and JSON |"
    )
    print(
        f"| didChange, apply one keystroke to the buffer (in process, {args.keystrokes * 10} edits) | "
        f"{kp50 * 1e6:.1f} µs | {kp95 * 1e6:.1f} µs | |"
    )
    for run, (first, total, result) in enumerate(explains):
        label = "cold: loads the model" if run == 0 else "warm"
        timings = result["timings"]
        compressed = (
            "context compressed" if any("exceeds" in n for n in result["notes"]) else "no compression"
        )
        print(
            f"| Explain (20 lines), first streamed text, run {run + 1} ({label}) | {first:.2f} s | | "
            f"whole answer {total:.2f} s: retrieval {timings['retrieve']:.1f} s ({compressed}), "
            f"generation {timings['generate']:.1f} s; {args.voters} voters, {args.max_tokens} tokens |"
        )


if __name__ == "__main__":
    asyncio.run(main())
