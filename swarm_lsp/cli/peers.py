"""`swarm-lsp peers`: the manual peer list (list with live health, add, remove)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from swarm_lsp.cli.common import UsageError, settings_of
from swarm_lsp.federation.federation import Federation
from swarm_lsp.federation.peer_list import KINDS, ManualPeer, PeerList


def add_commands(subcommands: argparse._SubParsersAction) -> None:
    from pathlib import Path

    peers = subcommands.add_parser("peers", help="list, add or remove federation peers (docs/federation.md)")
    peers.add_argument("--workspace", "-w", type=Path, default=None, help="workspace whose settings apply")
    peers.add_argument("--json", action="store_true", help="print the peers as JSON")
    peers.add_argument(
        "--discover", type=float, default=0.0, metavar="SECONDS",
        help="also listen this long for peers announced over mDNS and the beacon",
    )  # fmt: skip
    peers.set_defaults(handler=list_peers)
    actions = peers.add_subparsers(title="peer commands", metavar="ACTION")
    add = actions.add_parser("add", help="add a peer: another swarm-lsp api, or an OpenAI-compatible engine")
    add.add_argument("url", help="http://host:port (a swarm-lsp api) or an engine's base URL")
    add.add_argument("--kind", choices=KINDS, default="auto", help="auto (default) tells them apart")
    add.add_argument("--model", default="", help="an engine's model name (default: its first)")
    add.add_argument("--slots", type=int, default=4, help="an engine's requests at once (default 4)")
    token = add.add_mutually_exclusive_group()
    token.add_argument("--token", default=None, help="an engine's API key, sent as a Bearer token")
    token.add_argument("--token-file", type=argparse.FileType("r"), default=None, help="read it from a file")
    add.set_defaults(handler=add_peer)
    remove = actions.add_parser("remove", help="remove a peer from the list")
    remove.add_argument("url")
    remove.set_defaults(handler=remove_peer)


def add_peer(args: argparse.Namespace) -> int:
    token = args.token
    if args.token_file is not None:
        token = args.token_file.read().strip()
        if not token:
            raise UsageError("peers add: --token-file is empty")
    peers = PeerList().add(ManualPeer(args.url, args.kind, token or "", args.model, args.slots))
    print(f"added {peers[-1].url} ({len(peers)} peer(s) in {PeerList().path})")
    return 0


def remove_peer(args: argparse.Namespace) -> int:
    kept = PeerList().remove(args.url)
    print(f"removed; {len(kept)} peer(s) left in {PeerList().path}")
    return 0


def list_peers(args: argparse.Namespace) -> int:
    settings = settings_of(args).settings.federation
    listed = PeerList().load()
    if not settings.enabled:
        rows = [
            {"url": p.url, "kind": p.kind, "status": "not checked", "has_token": bool(p.token)}
            for p in listed
        ]
        _print(args, rows, note="federation is off (federation.enabled = false): peers are not contacted")
        return 0
    discovery = args.discover > 0
    probing = settings.model_copy(
        update={"mdns": settings.mdns and discovery, "beacon": settings.beacon and discovery}
    )
    rows = asyncio.run(_probe(probing, args.discover))
    _print(args, rows)
    return 0


async def _probe(settings: Any, discover_s: float) -> list[dict[str, Any]]:
    federation = Federation(settings)
    try:
        await federation.start()
        if discover_s:
            await asyncio.sleep(discover_s)
        await federation.ready()
        for peer in federation.roster.snapshot():
            if peer.health.last_ok is None and not peer.health.failures:
                await federation.check(peer)
        return federation.snapshot()
    finally:
        await federation.aclose()


def _print(args: argparse.Namespace, rows: list[dict[str, Any]], note: str = "") -> None:
    if args.json:
        print(json.dumps({"peers": rows, "note": note}, indent=2))
        return
    if note:
        print(note)
    if not rows:
        print("no peers (add one with `swarm-lsp peers add http://HOST:17615`)")
        return
    for row in rows:
        latency = f"{row['latency_ms']:.0f} ms" if row.get("latency_ms") is not None else "-"
        print(
            f"{row.get('name', row['url'])}  {row['kind']}  {row['status']}  latency {latency}  "
            f"load {row.get('load', '-')}/{row.get('slots', '-')}  model {row.get('model') or '-'}  "
            f"via {', '.join(row.get('sources', ['manual']))}"
        )
        if row.get("problem"):
            print(f"    {row['problem']}")
