"""The `swarm-lsp` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from swarm_lsp import __version__
from swarm_lsp.config import ConfigError, LoadedSettings, load_settings
from swarm_lsp.models.base import GenerationRequest, Message, Sampling, SwarmLspError

EXIT_USAGE = 2
EXIT_FAILURE = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"swarm-lsp: settings problem:\n{error}", file=sys.stderr)
        return EXIT_USAGE
    except SwarmLspError as error:
        print(f"swarm-lsp: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("swarm-lsp: cancelled", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm-lsp", description="A local AI assistant server for code editors."
    )
    parser.add_argument("--version", action="version", version=f"swarm-lsp {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="what this machine can run, and why")
    _add_workspace(doctor)
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(handler=_doctor)

    models = commands.add_parser("models", help="list known and local models; `models pull NAME`")
    models.add_argument("--json", action="store_true", help="print as JSON")
    _add_workspace(models)
    models.set_defaults(handler=_models_list)
    model_commands = models.add_subparsers(title="model commands", metavar="ACTION")
    pull = model_commands.add_parser("pull", help="download a catalog model (needs the internet)")
    pull.add_argument(
        "name", help="catalog name, optionally NAME:QUANT (e.g. qwen2.5-coder-1.5b-instruct:Q8_0)"
    )
    pull.add_argument(
        "--format", choices=["gguf", "mlx"], default=None, help="default: what this machine runs"
    )
    pull.set_defaults(handler=_models_pull)

    generate = commands.add_parser("generate", help="one prompt to the configured model (no retrieval)")
    generate.add_argument("prompt")
    _add_workspace(generate)
    generate.add_argument("-n", type=int, default=1, help="candidates decoded together (default 1)")
    generate.add_argument("--max-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    generate.add_argument("--json", action="store_true", help="print candidates as JSON")
    generate.set_defaults(handler=_generate)
    return parser


def _add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace", "-w", type=Path, default=None, help="workspace root (default: current folder)"
    )


def _settings(args: argparse.Namespace) -> LoadedSettings:
    workspace = (args.workspace or Path.cwd()).resolve()
    return load_settings(workspace)


def _doctor(args: argparse.Namespace) -> int:
    from swarm_lsp.doctor import build_report, render_text
    from swarm_lsp.hardware import detect
    from swarm_lsp.models.discovery import discover

    loaded = _settings(args)
    report = build_report(loaded, detect(), discover(loaded.settings.model.search_paths))
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_text(report))
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from swarm_lsp.hardware import fmt_bytes
    from swarm_lsp.models.catalog import CATALOG
    from swarm_lsp.models.discovery import discover

    loaded = _settings(args)
    local = discover(loaded.settings.model.search_paths)
    if args.json:
        catalog = [
            {
                "name": entry.name,
                "family": entry.family,
                "params_b": entry.params_b,
                "context_length": entry.context_length,
                "variants": [variant.__dict__ for variant in entry.variants],
            }
            for entry in CATALOG
        ]
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
        print(json.dumps({"catalog": catalog, "local": found}, indent=2))
        return 0
    print("Catalog (download with `swarm-lsp models pull NAME[:QUANT]`)")
    for entry in CATALOG:
        quants = ", ".join(f"{v.quant}/{v.format} {fmt_bytes(v.size_bytes)}" for v in entry.variants)
        print(f"  {entry.name:30} {entry.params_b:>6.2f}B  ctx {entry.context_length:>6}  {quants}")
    print("\nOn this machine")
    for model in local or []:
        size = fmt_bytes(model.size_bytes)
        print(f"  {model.name:30} {model.format:5} {model.source:11} {size:>10}  {model.path}")
    if not local:
        print("  none")
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    from swarm_lsp.hardware import detect
    from swarm_lsp.models.pull import pull

    fmt = args.format or ("mlx" if detect().accelerator == "apple" else "gguf")
    path = pull(args.name, fmt, progress=lambda text: print(text, file=sys.stderr))
    print(path)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from swarm_lsp.hardware import detect
    from swarm_lsp.models.select import open_backend

    loaded = _settings(args)
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
