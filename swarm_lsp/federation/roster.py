"""The machines of one federation as this process sees them, and the placement of voters on them.

No input or output here: the health loop (federation.py) and discovery feed it what they learn,
the swarm engine asks it where to run voters (`place`) and tells it how that went (`report`).
bench/federation_sim.py drives the same object with simulated peers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from swarm_lsp.federation.capability import quality_weight
from swarm_lsp.federation.health import PeerHealth
from swarm_lsp.federation.scheduler import Node, Policy, Scheduler, load
from swarm_lsp.models.base import Backend

LOCAL = "local"
PREFILL_SPEEDUP = 10
"""A model reads a prompt about this many times faster than it writes (batched prefill): a short answer
to a long prompt is then not taken for a slow machine."""
PeerKind = Literal["swarm", "engine"]
Source = Literal["manual", "mdns", "beacon"]
Trust = Literal["unknown", "trusted", "untrusted"]


@dataclass
class Peer:
    """One other machine (a swarm-lsp process) or serving engine (vLLM, llama-server, Ollama)."""

    url: str
    kind: PeerKind
    health: PeerHealth
    sources: set[Source] = field(default_factory=set)
    token: str = field(default="", repr=False)
    """Sent as a Bearer token (an engine's API key); never shown."""
    instance: str = ""
    model: str = ""
    slots: int = 1
    active: int = 0
    """Sequences on its model (running or waiting) at the last check, this process's included."""
    in_flight_at_check: int = 0
    """This process's voters on it at the last check (part of `active`)."""
    params_b: float = 0.0
    trust: Trust = "unknown"
    problem: str = ""
    """Why it is not used: not trusted, incompatible, unreachable (empty while it is fine)."""
    incompatible: bool = False
    last_seen: float = 0.0
    """When discovery last heard of it (manual peers: when added)."""
    departed: bool = False
    backend: Backend | None = field(default=None, repr=False)
    in_flight: int = 0
    """Voters this process has running on it now."""

    @property
    def key(self) -> str:
        return self.url

    @property
    def label(self) -> str:
        """How it is named in answers and logs: host:port."""
        return self.url.split("://", 1)[-1].split("/", 1)[0]

    @property
    def quality(self) -> float:
        return quality_weight(self.model, self.params_b)

    def checked(self, latency_s: float, active: int | None = None) -> None:
        """A health check passed; `active` is the load it reported (engines report none)."""
        self.problem = ""
        self.incompatible = False
        self.health.succeeded(latency_s=latency_s)
        if active is not None:
            self.active = active
            self.in_flight_at_check = self.in_flight

    def check_failed(self, problem: str, *, incompatible: bool = False) -> None:
        self.problem = problem
        self.incompatible = incompatible
        self.health.failed(problem)

    @property
    def others_load(self) -> int:
        """Sequences other machines had on it at the last check."""
        return max(0, self.active - self.in_flight_at_check)

    def status(self) -> str:
        """gone, seen (not trusted), incompatible, down, unknown (not checked yet), recovering or up."""
        if self.departed:
            return "gone"
        if self.trust == "untrusted":
            return "seen, not trusted"
        if self.incompatible:
            return "incompatible"
        if self.health.state == "open" or self.health.failures:
            return "down"
        if self.health.last_ok is None:
            return "unknown"
        return "up" if self.health.state == "closed" else "recovering"

    def usable(self) -> bool:
        trusted = self.kind == "engine" or self.trust == "trusted"
        return (
            not self.departed
            and trusted
            and not self.incompatible
            and self.backend is not None
            and self.health.last_ok is not None
            and self.health.usable()
        )

    def to_dict(self) -> dict[str, Any]:
        """What the CLI and the dashboard show (no token)."""
        return {
            "url": self.url,
            "name": self.label,
            "kind": self.kind,
            "sources": sorted(self.sources),
            "status": self.status(),
            "problem": self.problem or self.health.last_error,
            "trust": self.trust if self.kind == "swarm" else "by configuration",
            "model": self.model,
            "quality": self.quality,
            "slots": self.slots,
            "load": self.others_load + self.in_flight,
            "latency_ms": None if self.health.latency_s is None else round(self.health.latency_s * 1000, 1),
            "tokens_per_s": (
                None if not self.health.seconds_per_token else round(1 / self.health.seconds_per_token, 1)
            ),
            "breaker": self.health.state,
            "failures": self.health.failures,
            "has_token": bool(self.token),
        }


@dataclass(frozen=True)
class Assignment:
    key: str
    label: str
    backend: Backend
    voters: int
    sequences: int = 0
    """Sequences the node was expected to hold with these voters (for its speed once they finish)."""
    latency_s: float = 0.0


@dataclass
class LocalNode:
    backend: Backend | None
    health: PeerHealth
    in_flight: int = 0
    model: str = ""


class Roster:
    def __init__(
        self,
        *,
        policy: Policy = "balanced",
        failures_to_open: int = 3,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = Scheduler(policy)
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self.clock = clock
        self.local = LocalNode(None, self.new_health())
        self.peers: dict[str, Peer] = {}
        self._lock = threading.RLock()

    def new_health(self) -> PeerHealth:
        return PeerHealth(self.failures_to_open, self.open_seconds, self.clock)

    # -------------------------------------------------------------- membership

    def set_local(self, backend: Backend | None) -> None:
        with self._lock:
            self.local.backend = backend
            self.local.model = backend.info.model if backend is not None else ""
            if backend is not None and self.local.health.last_ok is None:
                self.local.health.succeeded()

    def upsert(self, url: str, kind: PeerKind, source: Source, *, token: str = "") -> Peer:
        with self._lock:
            peer = self.peers.get(url)
            if peer is None:
                peer = self.peers[url] = Peer(url, kind, self.new_health())
            peer.sources.add(source)
            peer.departed = False
            peer.last_seen = self.clock()
            if token:
                peer.token = token
            return peer

    def depart(self, url: str, source: Source) -> None:
        """Discovery says the peer left; it stays listed (as gone) unless nothing else knows it."""
        with self._lock:
            peer = self.peers.get(url)
            if peer is None:
                return
            peer.sources.discard(source)
            if not peer.sources:
                peer.departed = True

    def forget(self, url: str) -> Peer | None:
        with self._lock:
            return self.peers.pop(url, None)

    def expire(self, gone_after: float) -> list[Peer]:
        """Discovered peers silent or down for `gone_after` seconds are marked gone."""
        now = self.clock()
        gone = []
        with self._lock:
            for peer in self.peers.values():
                if peer.departed or "manual" in peer.sources:
                    continue
                last = max(peer.last_seen, peer.health.last_ok or 0.0)
                if now - last > gone_after:
                    peer.departed = True
                    gone.append(peer)
        return gone

    def snapshot(self) -> list[Peer]:
        with self._lock:
            return sorted(self.peers.values(), key=lambda peer: peer.url)

    # -------------------------------------------------------------- placement

    def nodes(self, exclude: Iterable[str] = ()) -> list[Node]:
        excluded = set(exclude)
        with self._lock:
            nodes = []
            local = self.local
            if local.backend is not None and LOCAL not in excluded and local.health.usable():
                nodes.append(
                    Node(
                        LOCAL,
                        slots=max(1, local.backend.info.max_parallel),
                        active=local.in_flight,
                        seconds_per_token=local.health.seconds_per_token,
                        quality=quality_weight(local.model),
                    )
                )
            for peer in self.peers.values():
                if peer.key in excluded or not peer.usable():
                    continue
                nodes.append(
                    Node(
                        peer.key,
                        slots=max(1, peer.slots),
                        active=peer.others_load + peer.in_flight,
                        latency_s=peer.health.latency_s or 0.0,
                        seconds_per_token=peer.health.seconds_per_token,
                        quality=peer.quality,
                    )
                )
            return nodes

    def place(
        self,
        voters: int,
        *,
        max_tokens: int,
        exclude: Iterable[str] = (),
        deadline_s: float | None = None,
    ) -> list[Assignment]:
        """Where (up to) `voters` voters run now; empty when no node can take them."""
        with self._lock:
            nodes = {node.key: node for node in self.nodes(exclude)}
            counts = self.scheduler.place(
                list(nodes.values()), voters, max_tokens=max_tokens, deadline_s=deadline_s
            )
            assignments = []
            for key, count in counts.items():
                node = nodes[key]
                sequences = node.active + count
                if key == LOCAL:
                    assert self.local.backend is not None
                    self.local.in_flight += count
                    assignments.append(Assignment(LOCAL, LOCAL, self.local.backend, count, sequences))
                    continue
                peer = self.peers[key]
                assert peer.backend is not None
                peer.in_flight += count
                peer.health.probe_started()
                assignments.append(
                    Assignment(key, peer.label, peer.backend, count, sequences, node.latency_s)
                )
            return assignments

    def report(
        self,
        assignment: Assignment,
        *,
        elapsed_s: float,
        tokens: int,
        prompt_tokens: int = 0,
        error: str | None = None,
    ) -> None:
        """How an assignment went: `tokens` the most any of its voters wrote (reading the prompt
        counts as `PREFILL_SPEEDUP` times faster than writing), `error` if it failed. This machine's
        own model is never left out for a failure (nothing would check it again)."""
        with self._lock:
            if assignment.key == LOCAL:
                target, slots = self.local, max(1, assignment.backend.info.max_parallel)
            else:
                peer = self.peers.get(assignment.key)
                if peer is None:
                    return
                target, slots = peer, max(1, peer.slots)
            target.in_flight = max(0, target.in_flight - assignment.voters)
            if error is not None:
                if assignment.key != LOCAL:
                    target.health.failed(error)
                return
            working = max(0.0, elapsed_s - assignment.latency_s)
            target.health.generated(
                working, tokens, load(max(assignment.sequences, assignment.voters), slots)
            )
