"""The workspace and model subcommands: index, search, ask, audit, doctor, models, generate."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from swarm_lsp.cli.common import UsageError, settings_of, workspace_of
from swarm_lsp.models.base import GenerationRequest, Message, Sampling
from swarm_lsp.progress import ProgressLine

if TYPE_CHECKING:
    from swarm_lsp.workspace import IndexStatus, SyncReport

SKIPPED_PRINTED = 20
"""Skipped files `swarm-lsp index` names, with why; --json lists more."""


def audit(args: argparse.Namespace) -> int:
    from swarm_lsp.tools.audit import read_audit
    from swarm_lsp.tools.toolbox import audit_path

    path = audit_path(workspace_of(args))
    entries = [entry for entry in read_audit(path) if args.tool is None or entry.get("tool") == args.tool]
    if args.last > 0:
        entries = entries[-args.last :]
    if args.json:
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        return 0
    if not entries:
        print(f"no tool calls recorded in {path}")
        return 0
    for entry in entries:
        decision = entry.get("decision") or "error"
        by = f" by {entry['decided_by']}" if entry.get("decided_by") else ""
        cached = " cached" if entry.get("cached") else ""
        print(
            f"{entry.get('time', '?')}  {entry.get('client', '?')}  {entry.get('tool', '?')} "
            f"[{entry.get('tier') or '-'}] {decision}{by}{cached}  {entry.get('duration_ms', 0):.1f} ms  "
            f"{entry.get('result_bytes', 0)} B"
        )
        print(f"    {json.dumps(entry.get('arguments'), ensure_ascii=False)[:300]}")
        if entry.get("error"):
            print(f"    error: {entry['error']}")
    print(f"({len(entries)} calls from {path})")
    return 0


def doctor(args: argparse.Namespace) -> int:
    from swarm_lsp.doctor import diagnose, render_text

    report = diagnose(settings_of(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_text(report))
    return 0


def models_list(args: argparse.Namespace) -> int:
    from swarm_lsp.models.catalog import CATALOG
    from swarm_lsp.models.discovery import discover
    from swarm_lsp.models.embedding_catalog import EMBEDDING_CATALOG
    from swarm_lsp.models.hardware import fmt_bytes

    loaded = settings_of(args)
    local = discover(loaded.settings.model.search_paths)
    if args.json:
        catalog = [_entry_json(entry, "name family params_b context_length") for entry in CATALOG]
        found = [
            {
                "name": m.name,
                "path": str(m.path),
                "format": m.format,
                "source": m.source,
                "size_bytes": m.size_bytes,
            }
            for m in local
        ]
        embedding = [
            _entry_json(
                entry,
                "name family",
                embedder=entry.format,
                dimension=entry.dimension,
                description=entry.description,
            )
            for entry in EMBEDDING_CATALOG
        ]
        print(json.dumps({"catalog": catalog, "embedding_catalog": embedding, "local": found}, indent=2))
        return 0
    print("Catalog (download with `swarm-lsp models pull NAME[:QUANT]`)")
    for entry in CATALOG:
        quants = ", ".join(f"{v.quant}/{v.format} {fmt_bytes(v.size_bytes)}" for v in entry.variants)
        print(f"  {entry.name:30} {entry.params_b:>6.2f}B  ctx {entry.context_length:>6}  {quants}")
    print("\nEmbedding models for the index (index.embedder = auto finds a pulled one)")
    for embedder in EMBEDDING_CATALOG:
        quants = ", ".join(f"{v.quant} {fmt_bytes(v.size_bytes)}" for v in embedder.variants)
        print(f"  {embedder.name:30} {embedder.format:6} {embedder.dimension:>5}d  {quants}")
        print(f"  {'':30} {embedder.description}")
    print("\nOn this machine")
    for model in local or []:
        size = fmt_bytes(model.size_bytes)
        print(f"  {model.name:30} {model.format:5} {model.source:11} {size:>10}  {model.path}")
    if not local:
        print("  none")
    return 0


def _entry_json(entry: Any, fields: str, **extra: Any) -> dict[str, Any]:
    """A catalog entry as `models --json` prints it: the named fields, `extra`, then its variants."""
    data = {name: getattr(entry, name) for name in fields.split()} | extra
    return data | {"variants": [variant.__dict__ for variant in entry.variants]}


def models_pull(args: argparse.Namespace) -> int:
    from swarm_lsp.models.hardware import detect
    from swarm_lsp.models.pull import pull

    fmt = args.format or ("mlx" if detect().accelerator == "apple" else "gguf")
    path = pull(args.name, fmt, progress=lambda text: print(text, file=sys.stderr))
    print(path)
    return 0


def index(args: argparse.Namespace) -> int:
    if args.gc:
        return _collect_garbage(args)
    if args.dry_run:
        raise UsageError("index: --dry-run goes with --gc")
    with workspace_of(args) as workspace:
        if not args.status:
            unchanged = workspace.unchanged_index(embed=not args.no_embed)
            if unchanged is not None:
                return _print_index(args, *unchanged)
        report = None
        if not args.status:
            bar = None if args.json else ProgressLine(sys.stderr)
            report = workspace.index(progress=bar, embed=not args.no_embed)
            if bar is not None:
                bar.finish()
        return _print_index(args, report, workspace.status())


def _collect_garbage(args: argparse.Namespace) -> int:
    from swarm_lsp.cache_gc import collect_garbage

    collected = collect_garbage(dry_run=args.dry_run)
    if args.json:
        print(json.dumps(asdict(collected) | {"freed_bytes": collected.freed_bytes, "dry_run": args.dry_run}))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for folder, root, size in collected.removed:
        print(f"{verb} {folder} ({size / 1e6:.1f} MB): {root} no longer exists")
    for folder in collected.busy:
        print(f"kept {folder}: its workspace is gone but a process still holds it")
    for folder in collected.unknown:
        print(f"kept {folder}: it does not record its workspace (made by an older version)")
    freed = collected.freed_bytes / 1e6
    print(f"{verb} {len(collected.removed)} folder(s), {freed:.1f} MB; kept {collected.kept} in use")
    return 0


def _print_index(args: argparse.Namespace, report: SyncReport | None, status: IndexStatus) -> int:
    if args.json:
        data = {"status": status.to_dict()}
        if report is not None:
            data["sync"] = {
                "parsed": report.parsed,
                "deleted": report.deleted,
                "unchanged": report.unchanged,
                "chunks_written": report.chunks_written,
                "embedded": report.embedded,
                "skipped": [{"path": item.path, "reason": item.reason} for item in report.skipped],
                "seconds": report.seconds,
            }
        print(json.dumps(data, indent=2))
        return 0
    if report is not None:
        print(
            f"indexed {report.parsed} files ({report.chunks_written} chunks), "
            f"{report.unchanged} unchanged, "
            f"{report.deleted} removed, {report.embedded} chunks embedded "
            f"in {report.seconds.get('total', 0):.1f}s"
        )
    print(_render_status(status))
    return 0


def _render_status(status: IndexStatus) -> str:
    from datetime import datetime

    from swarm_lsp.models.hardware import fmt_bytes

    updated = (
        datetime.fromtimestamp(status.updated_at).isoformat(" ", "seconds") if status.updated_at else "never"
    )
    embedder = status.embedder or f"none ({status.embedder_note or 'full-text search only'})"
    lines = [
        f"index of {status.root}",
        f"  files {status.files}, chunks {status.chunks}, symbols {status.symbols}",
        f"  embedder {embedder}",
        f"  vectors {status.chunks_with_vectors} of {status.chunks} (backlog {status.embedding_backlog})",
        f"  updated {updated}, {fmt_bytes(status.disk_bytes)} at {status.location}",
    ]
    if status.rebuilt_reason:
        lines.append(f"  rebuilt on open: {status.rebuilt_reason}")
    if status.sync_error:
        lines.append(f"  last sync failed: {status.sync_error}")
    if status.skipped_files:
        lines.append(f"  skipped {status.skipped_files} file(s):")
        lines += [f"    {item['path']}: {item['reason']}" for item in status.skipped[:SKIPPED_PRINTED]]
        if status.skipped_files > SKIPPED_PRINTED:
            more = status.skipped_files - SKIPPED_PRINTED
            lines.append(f"    ... and {more} more (--json lists {len(status.skipped)})")
    return "\n".join(lines)


def search(args: argparse.Namespace) -> int:
    with workspace_of(args) as workspace:
        hits = workspace.search(args.query, k=args.k, mode=args.mode)
        if args.json:
            print(json.dumps([hit.to_dict() for hit in hits], indent=2))
            return 0
        if not hits:
            print("no results (is the workspace indexed? run `swarm-lsp index`)")
        for hit in hits:
            symbol = f"  {hit.symbol}" if hit.symbol else ""
            print(f"{hit.citation}{symbol}  [{hit.kind}, {hit.score:.3f}, {'+'.join(hit.modes)}]")
            for line in hit.text.splitlines()[:3]:
                print(f"    {line}")
    return 0


def ask(args: argparse.Namespace) -> int:
    from swarm_lsp.basics import CancellationToken
    from swarm_lsp.swarm.tasks import Task, TextRange

    text_range = None
    if args.lines:
        if not args.file:
            raise SystemExit("swarm-lsp ask: --lines needs --file")
        start, _, end = args.lines.partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise SystemExit(
                f"swarm-lsp ask: --lines takes A-B with 1-based line numbers, got {args.lines!r}"
            )
        text_range = TextRange(int(start), int(end or start))
    task = Task(kind="ask", prompt=args.question, path=args.file, range=text_range)
    cancel = CancellationToken()
    with workspace_of(args) as workspace:
        workspace.index(embed=False)  # a quick incremental sync; vectors fill in where they exist
        progress = _SwarmProgressLine(sys.stderr)
        try:
            result = asyncio.run(
                workspace.run(
                    task, voters=args.voters, strategy=args.strategy, cancel=cancel, on_progress=progress
                )
            )
        except KeyboardInterrupt:
            cancel.cancel()
            raise
        progress.finish()
    if args.json:
        print(json.dumps(result.to_dict(candidates=args.show_candidates), indent=2))
        return 0
    print(result.answer.strip() or "(no answer)")
    print()
    verdict = "LOW AGREEMENT: treat this answer with care" if result.low_agreement else "agreement"
    finished = len(result.candidates)
    how = f"{result.strategy}, {finished}/{result.voters} voters, {result.model}"
    print(f"{verdict} {result.agreement:.2f} ({how})")
    if result.degraded:
        print("degraded: some voters did not finish; " + "; ".join(result.notes))
    if result.sources:
        print("sources: " + ", ".join(result.sources))
    if args.show_candidates:
        for candidate in result.candidates:
            mark = "*" if candidate.index == result.winner else " "
            state = "valid" if candidate.valid else f"invalid: {candidate.invalid_reason}"
            model = f"{candidate.model}, " if candidate.model else ""
            how = f"{model}T={candidate.temperature}, score {candidate.score}, {state}"
            print(f"\n{mark} candidate {candidate.index} ({how})")
            print(candidate.text.strip())
            evidence = candidate.evidence
            if evidence is not None:
                checked = {key: evidence[key] for key in ("supported", "missing") if evidence[key]}
                print(f"  evidence {evidence['score']}: {checked or 'nothing checkable'}")
    return 0


class _SwarmProgressLine:
    """Voters running and tokens so far, on one stderr line (silent when stderr is not a terminal)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.shown = False

    def __call__(self, event) -> None:
        if not self.interactive:
            return
        text = f"{event.phase}: {event.voters} voters, {event.tokens} tokens"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def generate(args: argparse.Namespace) -> int:
    from swarm_lsp.models.hardware import detect
    from swarm_lsp.models.select import open_backend

    loaded = settings_of(args)
    backend, run = open_backend(loaded.settings, detect())
    temperature = loaded.settings.swarm.temperature if args.temperature is None else args.temperature
    streaming = args.n == 1 and not args.json

    def show(index: int, text: str) -> None:
        if streaming:
            sys.stdout.write(text)
            sys.stdout.flush()

    request = GenerationRequest(
        messages=[Message("user", args.prompt)],
        n=args.n,
        sampling=Sampling(temperature=temperature),
        max_tokens=args.max_tokens,
        on_token=show,
    )
    print(f"[{backend.info.backend}: {backend.info.model}, context {run.context}]", file=sys.stderr)

    async def go() -> list:
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    candidates = asyncio.run(go())
    if args.json:
        print(json.dumps([c.__dict__ | {"sampling": c.sampling.__dict__} for c in candidates], indent=2))
    elif streaming:
        print()
    else:
        for candidate in candidates:
            print(f"--- candidate {candidate.index} ({candidate.finish_reason})\n{candidate.text}")
    return 0
