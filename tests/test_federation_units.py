"""Federation's parts on their own: the protocol's proofs and signatures, the breaker, the scheduler,
the peer list, capability weights, the beacon on loopback, and the engine's failover."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from swarm_lsp.federation.beacon import Beacon, beacon_payload, parse_beacon
from swarm_lsp.federation.capability import params_from_name, quality_weight
from swarm_lsp.federation.health import PeerHealth
from swarm_lsp.federation.peer_list import ManualPeer, PeerList, PeerListError
from swarm_lsp.federation.protocol import (
    PROTOCOL_VERSION,
    IncompatiblePeer,
    PeerProtocolError,
    SignatureCheck,
    SignatureRejected,
    hello_proof,
    parse_hello,
    proof_holds,
    sign,
)
from swarm_lsp.federation.roster import Roster
from swarm_lsp.federation.scheduler import Node, Scheduler
from swarm_lsp.models.base import BackendInfo, Candidate, GenerationRequest, Message
from swarm_lsp.swarm.engine import SwarmEngine, SwarmError

# ------------------------------------------------------------------------------------ protocol


def test_a_signed_request_passes_once_and_any_change_is_refused() -> None:
    check = SignatureCheck("s3cret")
    body = b'{"n": 2}'
    header = sign("s3cret", "POST", "/federation/v1/generate", body)
    check.verify(header, "POST", "/federation/v1/generate", body)
    with pytest.raises(SignatureRejected, match="replay"):
        check.verify(header, "POST", "/federation/v1/generate", body)
    fresh = sign("s3cret", "POST", "/federation/v1/generate", body)
    with pytest.raises(SignatureRejected, match="not signed with"):
        check.verify(fresh, "POST", "/federation/v1/generate", b'{"n": 3}')
    with pytest.raises(SignatureRejected, match="not signed with"):
        check.verify(
            sign("other", "POST", "/federation/v1/generate", body), "POST", "/federation/v1/generate", body
        )
    with pytest.raises(SignatureRejected, match="no X-Swarm-Signature"):
        check.verify(None, "POST", "/federation/v1/generate", body)
    stale = sign("s3cret", "POST", "/federation/v1/generate", body, now=time.time() - 3600)
    with pytest.raises(SignatureRejected, match="clock"):
        check.verify(stale, "POST", "/federation/v1/generate", body)
    with pytest.raises(SignatureRejected, match="malformed"):
        check.verify("t=yesterday,n=1,s=2", "POST", "/federation/v1/generate", body)
    with pytest.raises(SignatureRejected, match="no secret"):
        SignatureCheck("").verify(header, "POST", "/federation/v1/generate", body)


def test_a_hello_proof_is_bound_to_the_secret_the_nonce_and_the_address() -> None:
    proof = hello_proof("s3cret", "nonce-123", "abc", "127.0.0.1:9000")
    assert proof_holds("s3cret", "nonce-123", "abc", "127.0.0.1:9000", proof)
    assert not proof_holds("other", "nonce-123", "abc", "127.0.0.1:9000", proof)
    assert not proof_holds("s3cret", "nonce-124", "abc", "127.0.0.1:9000", proof)
    assert not proof_holds("s3cret", "nonce-123", "abc", "10.0.0.9:9000", proof), "a relayed proof must fail"
    assert not proof_holds("s3cret", "nonce-123", "abc", "127.0.0.1:9000", None)


def test_hellos_are_checked_field_by_field() -> None:
    hello = parse_hello(
        {"instance": "i1", "protocol": PROTOCOL_VERSION, "model": "m", "slots": 4, "active": 1}
    )
    assert (hello.instance, hello.slots, hello.active, hello.proof) == ("i1", 4, 1, None)
    with pytest.raises(IncompatiblePeer, match="protocol 99"):
        parse_hello({"instance": "i1", "protocol": 99})
    with pytest.raises(PeerProtocolError, match="not as a swarm-lsp peer"):
        parse_hello(["garbage"])
    with pytest.raises(PeerProtocolError, match="wrong type"):
        parse_hello({"instance": "i1", "protocol": PROTOCOL_VERSION, "slots": "many"})


# ------------------------------------------------------------------------------------ health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_half_opens_later_and_closes_on_success() -> None:
    clock = Clock()
    health = PeerHealth(failures_to_open=3, open_seconds=10, clock=clock)
    health.succeeded(latency_s=0.02)
    assert health.usable() and health.state == "closed"
    health.failed("refused")
    assert not health.usable(), "one failure leaves a peer out until a check passes"
    assert health.next_check_in(1.0) == 1.0
    health.failed("refused")
    assert health.next_check_in(1.0) == 2.0, "checks back off"
    health.failed("refused")
    assert health.state == "open" and not health.usable()
    clock.now += 10
    assert health.state == "half-open" and health.usable()
    health.probe_started()
    assert not health.usable(), "one probe at a time"
    health.failed("still refused")
    assert health.state == "open" and health.open_for == 20, "a failed probe opens it for longer"
    clock.now += 20
    health.succeeded(latency_s=0.04)
    assert health.state == "closed" and health.usable()
    assert 0.02 < (health.latency_s or 0) < 0.04, "latency is a moving average"


# ------------------------------------------------------------------------------------ scheduler


def test_balanced_placement_favours_fast_free_strong_nodes_and_spreads_the_risk() -> None:
    nodes = [
        Node("laptop", slots=1, seconds_per_token=0.08, quality=0.6),
        Node("gpu", slots=8, seconds_per_token=0.01, quality=1.2),
        Node("busy-gpu", slots=8, active=30, seconds_per_token=0.01, quality=1.2),
        Node("far", slots=4, latency_s=5.0, seconds_per_token=0.02),
    ]
    alone = Scheduler("balanced").place(nodes, 6, max_tokens=128)
    assert alone == {"gpu": 6}, "the cap gives way when every other node is more than twice as slow"
    twin = Node("gpu-2", slots=8, seconds_per_token=0.012, quality=1.2)
    spread = Scheduler("balanced").place([*nodes, twin], 6, max_tokens=128)
    assert spread == {"gpu": 3, "gpu-2": 3}, "no node takes more than half while another is nearly as good"
    assert Scheduler("balanced").place(nodes[:1], 4, max_tokens=64) == {"laptop": 4}


def test_voters_that_would_miss_the_deadline_are_left_out_but_never_the_first() -> None:
    slow = [Node("laptop", slots=1, seconds_per_token=0.1), Node("old", slots=1, seconds_per_token=0.2)]
    placed = Scheduler("balanced").place(slow, 5, max_tokens=100, deadline_s=25)
    assert placed == {"laptop": 2, "old": 1}
    assert Scheduler("balanced").place(slow, 5, max_tokens=100, deadline_s=1) == {"laptop": 1}


def test_an_unmeasured_node_counts_as_slow_as_the_slowest_measured() -> None:
    nodes = [
        Node("fast", slots=4, seconds_per_token=0.01),
        Node("slow", slots=4, seconds_per_token=0.04),
        Node("new", slots=4),
    ]
    placed = Scheduler("balanced").place(nodes, 2, max_tokens=100)
    assert placed == {"fast": 2}, "not the median: a new node is not trusted to be fast"


def test_round_robin_and_random_ignore_load() -> None:
    nodes = [Node("a", 1), Node("b", 1, active=50), Node("c", 1)]
    rr = Scheduler("round-robin")
    assert rr.place(nodes, 2, max_tokens=10) == {"a": 1, "b": 1}
    assert rr.place(nodes, 2, max_tokens=10) == {"c": 1, "a": 1}
    assert sum(Scheduler("random", seed=3).place(nodes, 9, max_tokens=10).values()) == 9
    with pytest.raises(ValueError, match="unknown placement policy"):
        Scheduler("fastest")  # type: ignore[arg-type]


def test_capability_reads_family_and_size_from_the_model_name() -> None:
    assert params_from_name("qwen2.5-coder-7b-instruct") == 7.0
    assert params_from_name("SmolLM2-135M-Instruct.Q4_1") == pytest.approx(0.135)
    assert params_from_name("mystery") == 0.0
    assert quality_weight("qwen2.5-coder-7b") > quality_weight("qwen2.5-7b") > quality_weight("smollm2-135m")
    assert quality_weight("gemma-3-270m") < quality_weight("gemma-3-4b")


# ------------------------------------------------------------------------------------ peer list


def test_the_peer_list_persists_replaces_and_removes(tmp_path) -> None:
    peers = PeerList(tmp_path / "peers.json")
    assert peers.load() == []
    peers.add(ManualPeer("127.0.0.1:17615"))
    peers.add(ManualPeer("http://gpu.local:8000/", "engine", "key-1", "qwen", 8))
    peers.add(ManualPeer("http://127.0.0.1:17615", "swarm"))
    listed = PeerList(tmp_path / "peers.json").load()
    assert [(p.url, p.kind) for p in listed] == [
        ("http://gpu.local:8000", "engine"),
        ("http://127.0.0.1:17615", "swarm"),
    ]
    assert (tmp_path / "peers.json").stat().st_mode & 0o077 == 0, "it may hold tokens: the user's alone"
    assert [p.url for p in peers.remove("gpu.local:8000")] == ["http://127.0.0.1:17615"]
    with pytest.raises(PeerListError, match="not in the peer list"):
        peers.remove("http://elsewhere:1")
    with pytest.raises(PeerListError, match="not an http"):
        peers.add(ManualPeer("ftp://host/"))
    with pytest.raises(PeerListError, match="unknown peer kind"):
        peers.add(ManualPeer("http://h:1", "robot"))  # type: ignore[arg-type]
    (tmp_path / "peers.json").write_text("{broken")
    with pytest.raises(PeerListError, match="fix or delete"):
        peers.load()
    assert list(tmp_path.glob(".peers-*")) == [], "no temporary file is left behind"


# ------------------------------------------------------------------------------------ beacon


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_beacon_on_loopback_is_heard_by_another_listener_but_not_by_its_sender() -> None:
    port = _free_udp_port()
    heard_by_listener: list[tuple[str, str, int]] = []
    heard_by_sender: list[tuple[str, str, int]] = []
    # Two beacons: by the second, the sender has had its own first one to (wrongly) hear.
    heard_twice = threading.Event()

    def listener_hears(*found: Any) -> None:
        heard_by_listener.append(found)
        if len(heard_by_listener) >= 2:
            heard_twice.set()

    listener = Beacon(port=port, address="127.255.255.255", own_instance="listener", heard=listener_hears)
    sender = Beacon(port=port, address="127.255.255.255", own_instance="sender",
                    heard=lambda *found: heard_by_sender.append(found),
                    payload=beacon_payload("sender", 17615, "m"), interval=0.1)  # fmt: skip
    try:
        assert heard_twice.wait(30), f"the listener heard {len(heard_by_listener)} beacons in 30 s, not 2"
    finally:
        sender.close()
        listener.close()
    assert heard_by_listener[0] == (
        "http://127.0.0.1:17615",
        "sender",
        PROTOCOL_VERSION,
    )
    assert heard_by_sender == [], "a process does not find itself"
    assert parse_beacon(b"not json") is None
    assert parse_beacon(json.dumps({"service": "swarm-lsp", "port": 0, "instance": "x"}).encode()) is None


# ------------------------------------------------------------------------------------ failover


@dataclass
class ScriptedBackend:
    """A test double: answers after `delay` seconds, or fails with `error`."""

    name: str
    delay: float = 0.01
    error: str = ""
    calls: int = 0

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("test", self.name, 2048, 4)

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error:
            raise ConnectionError(self.error)
        return [
            Candidate(i, f"answer from {self.name}", "stop", request.sampling_for(i), completion_tokens=5)
            for i in range(request.n)
        ]

    async def aclose(self) -> None:
        return None


def _roster(*backends: ScriptedBackend) -> Roster:
    roster = Roster()
    roster.set_local(backends[0])
    for backend in backends[1:]:
        peer = roster.upsert(f"http://{backend.name}:1", "engine", "manual")
        peer.backend, peer.slots = backend, 4
        peer.health.succeeded(latency_s=0.001)
    return roster


async def test_a_failing_peers_voters_are_retried_elsewhere_and_the_answer_says_so() -> None:
    local, good, dying = (
        ScriptedBackend("local"),
        ScriptedBackend("good"),
        ScriptedBackend("dying", error="reset"),
    )
    roster = _roster(local, good, dying)
    engine = SwarmEngine([], placement=roster, voter_timeout=10)
    result = await engine.generate([Message("user", "hi")], 6, max_tokens=8)
    assert dying.calls == 1 and "dying:1" in result.failed_nodes
    assert len(result.candidates) == 6 and result.retried >= 1 and result.degraded
    assert [c.index for c in result.candidates] == list(range(6))
    assert any("dying:1: reset" in failure for failure in result.failures)
    assert roster.peers["http://dying:1"].status() == "down"
    again = await engine.generate([Message("user", "hi")], 6, max_tokens=8)
    assert dying.calls == 1 and not again.degraded, "a failed peer gets no voters until a check passes"


async def test_with_every_machine_failing_the_error_names_them() -> None:
    roster = _roster(ScriptedBackend("local", error="boom"), ScriptedBackend("peer", error="gone"))
    engine = SwarmEngine([], placement=roster, voter_timeout=10)
    with pytest.raises(SwarmError, match=r"local: boom.*peer:1: gone|peer:1: gone.*local: boom"):
        await engine.generate([Message("user", "hi")], 4, max_tokens=8)


async def test_voters_are_not_retried_past_the_deadline() -> None:
    slow = ScriptedBackend("slow", delay=0.3, error="late failure")
    roster = _roster(ScriptedBackend("local", delay=0.01), slow)
    engine = SwarmEngine([], placement=roster, voter_timeout=0.2)
    result = await engine.generate([Message("user", "hi")], 4, max_tokens=8)
    assert result.degraded and 0 < len(result.candidates) < 4 and result.retried == 0
