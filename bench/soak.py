"""Soak: mixed traffic against real server processes for a while, watching for errors and leaks.

    python bench/soak.py [--minutes 30] [--project generated|werkzeug] [--seed 1] [--json FILE] [--check]

Setup: one workspace (a generated package of 60 modules by default, or a pinned sdist copy), one
index folder, and two real servers on it, as an editor and an agent host would run them side by
side: `swarm-lsp serve` over stdio (pygls' client) and `swarm-lsp mcp` over stdio (the MCP SDK's
client). The model is the bundled SmolLM2-135M with 3 voters of 32 tokens; the index is full text.

Three lanes run at once until the time is up:
- editor: didOpen/didChange on a module, code action listings, and every few seconds a model
  request through the language server: `swarm.explain` on a function, or a two-turn `swarm.chat`;
- agent: MCP tool calls (search_code, read_file, find_symbol, get_outline, list_dir, index_status,
  and write_file/edit_file/delete_file in a `soak/` folder, allowed by the policy);
- disk: a module edited on disk (a function with a new word appended); then search_code is asked
  until it finds the word: "edit -> searchable" is how long the watcher and the index took.

After a warm-up (a tenth of the run, at least 20 s, at most 3 min, and until every kind of request
was served once, at most a third of the run) each server's RSS, threads and
open file descriptors are read from /proc; again at the end. Temporary files: the servers get a
TMPDIR of their own, and the workspace and index folder are searched for leftover temporary files.

Prints markdown: per kind of request n, errors, p50 and p95 ms; per server RSS, threads and fds after
warm-up, at their peak in the first half of the run, and at the end (sampled ten times). Goals
(issue 18): no error, RSS growth under 10% after warm-up, no leaked threads, file descriptors or
temporary files. A pool growing to its size is not a leak: threads or fds leak when the end is over
the first half's peak (by more than LEAK_SLACK). `--check` exits 1 when one is missed; `--json FILE`
writes the figures (tests/test_soak.py runs a two-minute version).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lsp_client import BenchClient
from _projects import fresh_copy, load_average, machine_line, project_source, scratch_dir
from lsprotocol import types
from pygls.uris import from_fs_path

RSS_GROWTH_GOAL = 0.10
LEAK_SLACK = 2
"""Threads or fds at the end may exceed the first half's peak by this much (a request in flight)."""
WARM_KINDS = {"lsp swarm.explain", "lsp swarm.chat", "mcp write_file", "disk edit -> searchable"}
MODULES = 60
TEMPORARY = re.compile(r"\.tmp$|\.swarm-tmp|\.partial$")


def generated_project(root: Path, modules: int = MODULES) -> Path:
    """A package of `modules` modules, each with a class and a few documented functions."""
    for number in range(modules):
        lines = [f'"""Module {number}: records of kind {number % 7}."""\n\n']
        lines.append(f"class Record{number}:\n    def __init__(self, value):\n        self.value = value\n\n")
        lines.append(f"    def scaled(self, factor):\n        return self.value * factor + {number}\n\n\n")
        for index in range(6):
            lines.append(
                f"def step_{number}_{index}(values):\n"
                f'    """Step {index} of module {number}: sum the values above {index}."""\n'
                f"    return sum(v for v in values if v > {index})\n\n\n"
            )
        path = root / "pkg" / f"module_{number}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
    (root / "pkg" / "__init__.py").write_text("")
    (root / "README.md").write_text("# Soak\n\nA generated package for the soak benchmark.\n")
    return root


@dataclass
class Usage:
    rss_kb: int
    threads: int
    fds: int
    thread_names: Counter[str]
    fd_kinds: Counter[str]

    @classmethod
    def of(cls, pid: int) -> Usage:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        names = Counter(_read(task / "comm") for task in Path(f"/proc/{pid}/task").iterdir())
        kinds = Counter(_fd_kind(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
        return cls(rss, sum(names.values()), sum(kinds.values()), names, kinds)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "?"


def _fd_kind(fd: Path) -> str:
    """socket, pipe, anon_inode:[eventfd], or a file's folder."""
    try:
        target = os.readlink(fd)
    except OSError:
        return "?"
    if ":" in target and not target.startswith("/"):
        return target.split("[")[0].rstrip(":") if not target.startswith("anon_inode") else target
    return str(Path(target).parent)


@dataclass
class Soak:
    root: Path
    deadline: float
    seed: int
    timings: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    async def timed(self, kind: str, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(call(), timeout=300)
        except Exception as error:  # every failure is a finding: recorded, never raised
            self.errors.setdefault(kind, []).append(f"{type(error).__name__}: {error}"[:300])
            return None
        self.timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        return result

    def failed(self, kind: str, message: str) -> None:
        self.errors.setdefault(kind, []).append(message[:300])

    @property
    def running(self) -> bool:
        return time.monotonic() < self.deadline


def module_paths(root: Path) -> list[Path]:
    return sorted(path for path in (root / "pkg").rglob("*.py") if path.stat().st_size > 200) or sorted(
        path for path in root.rglob("*.py") if "/." not in str(path)
    )


async def editor_lane(soak: Soak, client: BenchClient) -> None:
    """Buffer edits, code action listings and a model request every few seconds."""
    rng = random.Random(soak.seed)
    lsp = client.lsp
    conversation: str | None = None
    turn = 0
    while soak.running:
        path = rng.choice(module_paths(soak.root))
        uri = from_fs_path(str(path))
        text = path.read_text()
        item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        lsp.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))
        end = len(text.splitlines())
        for version in range(2, 6):
            change = types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=end, character=0), end=types.Position(end, 0)),
                text=f"# edited {version}\n",
            )
            document = types.VersionedTextDocumentIdentifier(uri=uri, version=version)
            lsp.text_document_did_change(
                types.DidChangeTextDocumentParams(text_document=document, content_changes=[change])
            )
            end += 1
        for _ in range(20):
            line = rng.randrange(max(1, end))
            where = types.Range(start=types.Position(line, 0), end=types.Position(line, 4))
            params = types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=where,
                context=types.CodeActionContext(diagnostics=[]),
            )
            await soak.timed("lsp codeAction", lambda p=params: lsp.text_document_code_action_async(p))
        if turn % 2 == 0:
            function = next((n for n, line in enumerate(text.splitlines()) if line.startswith("def ")), 0)
            arguments = {
                "uri": uri,
                "range": {
                    "start": {"line": function, "character": 0},
                    "end": {"line": function + 3, "character": 0},
                },
            }
            params = types.ExecuteCommandParams(command="swarm.explain", arguments=[arguments])
            answer = await soak.timed(
                "lsp swarm.explain", lambda p=params: lsp.workspace_execute_command_async(p)
            )
            if answer is not None and not _answer_text(answer):
                soak.failed("lsp swarm.explain", f"no answer text: {str(answer)[:200]}")
        else:
            message = {"message": "What does this module compute?", "uri": uri}
            if conversation is not None:
                message["conversationId"] = conversation
            params = types.ExecuteCommandParams(command="swarm.chat", arguments=[message])
            answer = await soak.timed(
                "lsp swarm.chat", lambda p=params: lsp.workspace_execute_command_async(p)
            )
            conversation = (
                answer.get("conversationId") if isinstance(answer, dict) and turn % 4 == 1 else None
            )
            if answer is not None and not _answer_text(answer):
                soak.failed("lsp swarm.chat", f"no answer text: {str(answer)[:200]}")
        lsp.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
        turn += 1


def _answer_text(answer: Any) -> str:
    if isinstance(answer, dict):
        return str(answer.get("answer") or answer.get("text") or answer.get("markdown") or "")
    return str(getattr(answer, "answer", "") or "")


async def agent_lane(soak: Soak, client: Any) -> None:
    """MCP tool calls: reads and searches, and writes in a soak/ folder."""
    rng = random.Random(soak.seed + 1)
    words = ["values", "Record", "scaled", "factor", "module", "step", "sum"]
    number = 0
    while soak.running:
        path = str(rng.choice(module_paths(soak.root)).relative_to(soak.root))
        calls: list[tuple[str, dict[str, Any]]] = [
            ("search_code", {"query": rng.choice(words) + f" {rng.randrange(MODULES)}"}),
            ("read_file", {"path": path}),
            ("find_symbol", {"name": f"step_{rng.randrange(MODULES)}_{rng.randrange(6)}"}),
            ("get_outline", {"path": path}),
            ("list_dir", {"path": "."}),
            ("index_status", {}),
        ]
        scratch = f"soak/note_{number}.txt"
        calls += [
            ("write_file", {"path": scratch, "content": f"note {number}\nsecond line\n"}),
            ("edit_file", {"path": scratch, "old_text": "second line", "new_text": f"edited {number}"}),
            ("delete_file", {"path": scratch}),
        ]
        for tool, arguments in calls:
            result = await soak.timed(f"mcp {tool}", lambda t=tool, a=arguments: client.call_tool(t, a))
            if result is not None and result.is_error:
                soak.failed(f"mcp {tool}", f"{arguments}: {result.content[0].text if result.content else ''}")
        number += 1


async def disk_lane(soak: Soak, client: Any) -> None:
    """Edit a module on disk; ask search_code until the new word is found."""
    rng = random.Random(soak.seed + 2)
    number = 0
    while soak.running:
        path = rng.choice(module_paths(soak.root))
        word = f"soakmarker{soak.seed}x{number}"
        with path.open("a") as handle:
            handle.write(f"\n\ndef {word}(value):\n    return value\n")
        started = time.perf_counter()
        found = False
        while time.perf_counter() - started < 60:
            result = await client.call_tool("search_code", {"query": word})
            if not result.is_error and word in (result.content[0].text if result.content else ""):
                found = True
                break
            await asyncio.sleep(0.2)
        if found:
            soak.timings.setdefault("disk edit -> searchable", []).append(
                (time.perf_counter() - started) * 1000
            )
        else:
            soak.failed("disk edit -> searchable", f"{word} not found in 60 s")
        number += 1
        await asyncio.sleep(rng.uniform(1, 4))


def child_pid(command_word: str) -> int:
    """The pid of this process's child whose command line holds `command_word`."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == me and command_word.encode() in command:
            return int(entry.name)
    raise RuntimeError(f"no child process running {command_word!r}")


def leftover_temporaries(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and TEMPORARY.search(path.name):
                found.append(str(path))
    return sorted(found)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    scratch = Path(args.scratch) if args.scratch else scratch_dir("soak")
    if args.project == "generated":
        root = generated_project(scratch / "workspace")
    else:
        root = fresh_copy(project_source(args.project, args.version), scratch / "workspace")
    temporary = scratch / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    data = scratch / "data"
    env = {
        **os.environ,
        "TMPDIR": str(temporary),
        "SWARM_LSP_CONFIG_FILE": str(scratch / "no-user-config.toml"),
        "SWARM_LSP_CACHE_DIR": str(scratch / "cache"),
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": "2048",
        "SWARM_LSP_SWARM__VOTERS": "3",
        "SWARM_LSP_SWARM__MAX_TOKENS": "32",
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_INDEX__LOCATION": str(data),
        "SWARM_LSP_TOOLS__WRITE": "allow",
        "SWARM_LSP_TOOLS__DESTRUCTIVE": "allow",
    }
    swarm_lsp = str(Path(sys.executable).with_name("swarm-lsp"))
    editor = BenchClient("soak")
    progress = types.WindowClientCapabilities(work_done_progress=True)
    await editor.start(root, env, types.ClientCapabilities(window=progress), timeout=600)
    params = StdioServerParameters(command=swarm_lsp, args=["mcp", "--workspace", str(root)], env=env)
    seconds = args.minutes * 60
    warm_up = min(180.0, max(20.0, seconds / 10))
    async with Client(params) as agent:
        await agent.call_tool("index_status", {})
        pids = {"lsp (swarm-lsp serve)": editor.lsp._server.pid, "mcp (swarm-lsp mcp)": child_pid("mcp")}
        began = time.monotonic()
        soak = Soak(root, deadline=began + seconds, seed=args.seed)
        lanes = [
            asyncio.ensure_future(editor_lane(soak, editor)),
            asyncio.ensure_future(agent_lane(soak, agent)),
            asyncio.ensure_future(disk_lane(soak, agent)),
        ]
        await asyncio.sleep(warm_up)
        # Warm means every kind of request has been served once (the first model request loads it).
        while not set(soak.timings) >= WARM_KINDS and time.monotonic() < began + seconds / 3:
            await asyncio.sleep(0.5)
        warm = {name: Usage.of(pid) for name, pid in pids.items()}
        samples: dict[str, list[Usage]] = {name: [usage] for name, usage in warm.items()}
        sampler = asyncio.ensure_future(sample(soak, pids, samples, (soak.deadline - time.monotonic()) / 10))
        warm_temporaries = leftover_temporaries(temporary, root, data)
        warm_counts = {kind: len(values) for kind, values in soak.timings.items()}
        await asyncio.gather(*lanes)
        sampler.cancel()
        # Let the last writes and syncs settle before counting what is held.
        await agent.call_tool("index_status", {})
        end = {name: Usage.of(pid) for name, pid in pids.items()}
        elapsed = time.monotonic() - began
    await editor.stop()
    return report(
        args,
        soak,
        root,
        warm,
        end,
        samples,
        warm_temporaries,
        leftover_temporaries(temporary, root, data),
        warm_counts,
        elapsed,
    )


async def sample(soak: Soak, pids: dict[str, int], samples: dict[str, list[Usage]], interval: float) -> None:
    """Each server's usage every `interval` seconds until the run ends."""
    while soak.running:
        await asyncio.sleep(max(1.0, interval))
        for name, pid in pids.items():
            samples[name].append(Usage.of(pid))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def report(
    args: argparse.Namespace,
    soak: Soak,
    root: Path,
    warm: dict[str, Usage],
    end: dict[str, Usage],
    samples: dict[str, list[Usage]],
    warm_temporaries: list[str],
    end_temporaries: list[str],
    warm_counts: dict[str, int],
    elapsed: float,
) -> dict[str, Any]:
    kinds = sorted(set(soak.timings) | set(soak.errors))
    rows = []
    for kind in kinds:
        values = soak.timings.get(kind, [])
        rows.append(
            {
                "kind": kind,
                "served": len(values),
                "errors": len(soak.errors.get(kind, [])),
                "p50_ms": percentile(values, 0.5) if values else None,
                "p95_ms": percentile(values, 0.95) if values else None,
                "mean_ms": statistics.fmean(values) if values else None,
            }
        )
    processes = []
    for name in warm:
        before, after = warm[name], end[name]
        # A pool that grows to its size (lance's worker threads, its open index files) is not a
        # leak; a count still rising in the second half of the run is.
        first_half = samples[name][: max(1, len(samples[name]) // 2)]
        processes.append(
            {
                "process": name,
                "rss_warm_kb": before.rss_kb,
                "rss_end_kb": after.rss_kb,
                "rss_growth": (after.rss_kb - before.rss_kb) / before.rss_kb,
                "threads_warm": before.threads,
                "threads_end": after.threads,
                "fds_warm": before.fds,
                "fds_end": after.fds,
                "threads_added": dict(after.thread_names - before.thread_names),
                "fds_added": dict(after.fd_kinds - before.fd_kinds),
                "threads_first_half_peak": max(usage.threads for usage in first_half),
                "fds_first_half_peak": max(usage.fds for usage in first_half),
                "samples": [(usage.rss_kb, usage.threads, usage.fds) for usage in samples[name]],
            }
        )
    missed = []
    if any(row["errors"] for row in rows):
        missed.append("errors")
    for process in processes:
        if process["rss_growth"] > RSS_GROWTH_GOAL:
            missed.append(f"{process['process']} RSS grew {process['rss_growth']:.1%}")
        for what in ("threads", "fds"):
            peak, end_count = process[f"{what}_first_half_peak"], process[f"{what}_end"]
            if end_count > peak + LEAK_SLACK:
                missed.append(
                    f"{process['process']} {what} still rising: {peak} at half-time, {end_count} at the end"
                )
    if end_temporaries:
        missed.append(f"{len(end_temporaries)} temporary files left")
    figures = {
        "minutes": args.minutes,
        "elapsed_s": elapsed,
        "project": args.project,
        "load_average": load_average(),
        "requests": rows,
        "served_after_warm_up": sum(len(v) for v in soak.timings.values()) - sum(warm_counts.values()),
        "processes": processes,
        "temporaries_after_warm_up": warm_temporaries,
        "temporaries_at_end": end_temporaries,
        "errors": {kind: messages[:5] for kind, messages in soak.errors.items()},
        "missed": missed,
    }
    print_report(figures, root)
    return figures


def print_report(figures: dict[str, Any], root: Path) -> None:
    served = sum(row["served"] for row in figures["requests"])
    print(f"Soak: {figures['minutes']} min of mixed traffic on {figures['project']} ({root}).")
    print(f"{machine_line()}; load {figures['load_average']} at the end.")
    print(f"{served} requests served in {figures['elapsed_s']:.0f} s.")
    print()
    print("| kind | served | errors | p50 ms | p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for row in figures["requests"]:
        p50 = f"{row['p50_ms']:.1f}" if row["p50_ms"] is not None else "-"
        p95 = f"{row['p95_ms']:.1f}" if row["p95_ms"] is not None else "-"
        print(f"| {row['kind']} | {row['served']} | {row['errors']} | {p50} | {p95} |")
    print()
    print("| process | RSS warm MB | RSS end MB | growth | threads: warm / half-time peak / end | fds |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in figures["processes"]:
        print(
            f"| {row['process']} | {row['rss_warm_kb'] / 1024:.0f} | {row['rss_end_kb'] / 1024:.0f} "
            f"| {row['rss_growth']:+.1%} | {row['threads_warm']} / {row['threads_first_half_peak']} / "
            f"{row['threads_end']} | {row['fds_warm']} / {row['fds_first_half_peak']} / {row['fds_end']} |"
        )
    print()
    for row in figures["processes"]:
        if row["threads_added"] or row["fds_added"]:
            print(f"{row['process']}: threads added {row['threads_added']}; fds added {row['fds_added']}")
    print(f"Temporary files left at the end: {len(figures['temporaries_at_end'])}.")
    for kind, messages in figures["errors"].items():
        print(f"Errors of {kind}: {messages}")
    print("Goals met." if not figures["missed"] else f"Goals missed: {'; '.join(figures['missed'])}.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--project", default="generated", help="generated, or a PyPI sdist name (werkzeug)")
    parser.add_argument("--version", default="3.1.3", help="the sdist's version")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--scratch", help="the folder for the workspace, index and TMPDIR (default: a new one)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.check and figures["missed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
