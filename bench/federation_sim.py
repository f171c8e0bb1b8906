"""A federated swarm of 3 to 200 simulated peers driven by the real roster, scheduler, health and engine.

    python bench/federation_sim.py [--peers 3 10 50 200] [--faulty 0 0.1 0.3] [--seed 1]
                                   [--votes N] [--scale 1.0] [--load 0.5]

What is real: `Roster` (placement through `Scheduler`, in-flight counts, `report`), `PeerHealth` (moving
averages, circuit breaker, check back-off) and `SwarmEngine.generate` with its failover. A small health loop
does per peer what `Federation._watch`/`check` do: due checks gathered together, the round trip
and the peer's load on success (`Peer.checked`), `Peer.check_failed` on failure, the next check after
`health.next_check_in(interval)`; interval, breaker settings and the check timeout are the defaults of
`FederationSettings` and `federation.py`. What is simulated: the peers (each a `Backend`) and time.

Time is virtual: the event loop jumps to the next timer instead of sleeping, and `time.monotonic` (which the
engine's deadline and timings read) returns the virtual clock, so a run is deterministic for a seed, takes
only the CPU time of the real code, and is not disturbed by other work on the machine. CPU time of the real
code (placement, bookkeeping) does not advance the clock; it is microseconds against seconds of generation.

Peers (same model everywhere, so only hardware differs): laptops (55%: 1-2 slots, 10-25 tokens/s, CPU
batches +20% per extra sequence, prompt read at 10x the decode speed), desktops with a GPU (40%: 4-8
slots, 40-120 tokens/s, +10%, 25x) and servers (5%: 16 slots, 150-250 tokens/s, +5%, 40x). Round trips
are lognormal around 12 ms (laptops, Wi-Fi) or 3 ms (wired), a tenth of the peers behind a VPN (x8).
A peer decodes like a continuous-batching engine: up to `slots` sequences at once, each at
tokens/s / (1 + batch cost x (sequences - 1)), the rest wait in FIFO order; a request answers when all
its voters are done (a deadline loses the whole request, as PeerBackend and RemoteBackend do), after a
round trip and the prompt read (800 tokens). Each voter writes 50-115% of max_tokens (capped, seeded by
its sampling seed) times a 10% jitter. The load a health check reads is the sequences a peer holds.

Faults: a chosen fraction of peers (at least one when the fraction is above 0) is faulty: they alternate
between working (exponential, mean 60 s) and a fault of 15-90 s: slow (40%: 5-10x slower), dropped (30%:
connections refused at once, requests in flight reset) or hanging (30%: nothing answers, requests in
flight never come back, health checks time out after 5 s). A peer may start in the middle of a fault.
Other peers never fail.

Load: votes of 5 voters, max_tokens 128 and a 60 s deadline arrive as a Poisson process at `--load` of the
federation's healthy decode capacity, from 10 s on (after the first health checks). Peers, faults,
arrivals and voter lengths are drawn once per scenario from the seed; every policy gets the same.
`--votes` defaults to 120 simulated seconds of arrivals, at least 150 and at most 1200 votes, times
`--scale`. Time to answer is from a vote's arrival until `generate` returns (answered votes only).
"Lost with a healthy peer" counts votes that raised SwarmError while at least one peer was not in a
fault: the goal is none. Prints markdown; the last line is balanced p95 / round-robin p95 at 50 peers,
10% faulty.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import selectors
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from unittest import mock

from swarm_lsp.config import FederationSettings
from swarm_lsp.federation.federation import CHECK_TIMEOUT_S
from swarm_lsp.federation.roster import Peer, Roster
from swarm_lsp.federation.scheduler import POLICIES, Policy
from swarm_lsp.models.base import BackendInfo, Candidate, GenerationRequest, GenerationTimeout, Message
from swarm_lsp.swarm.engine import SwarmEngine, SwarmError

MODEL = "qwen2.5-coder-7b-instruct"
VOTERS = 5
MAX_TOKENS = 128
DEADLINE_S = 60.0
PROMPT_TOKENS = 800
WARMUP_S = 10.0
HORIZON_S = 120.0
MIN_VOTES, MAX_VOTES = 150, 1200
GOAL_RATIO = 0.70
EPS_TOKENS = 1e-6
MESSAGES = [Message("user", "Where is the circuit breaker of a peer opened, and for how long?")]

FaultKind = Literal["slow", "drop", "hang"]


@dataclass(frozen=True)
class HardwareClass:
    share: float
    slots: tuple[int, int]
    tokens_per_s: tuple[float, float]
    batch_cost: float
    prefill_speedup: float
    rtt_s: float


CLASSES: dict[str, HardwareClass] = {
    "server": HardwareClass(0.05, (16, 16), (150.0, 250.0), 0.05, 40.0, 0.003),
    "desktop": HardwareClass(0.40, (4, 8), (40.0, 120.0), 0.10, 25.0, 0.003),
    "laptop": HardwareClass(0.55, (1, 2), (10.0, 25.0), 0.20, 10.0, 0.012),
}


@dataclass(frozen=True)
class Fault:
    start: float
    end: float
    kind: FaultKind
    factor: float = 1.0


@dataclass(frozen=True)
class PeerSpec:
    index: int
    hardware: str
    slots: int
    tokens_per_s: float
    batch_cost: float
    prefill_s: float
    rtt_s: float
    faults: tuple[Fault, ...] = ()

    @property
    def url(self) -> str:
        return f"http://10.0.{self.index // 250}.{self.index % 250 + 1}:8080"

    def capacity(self, tokens: float) -> float:
        """Voters a second it decodes with all its slots busy."""
        return self.slots / (tokens / self.tokens_per_s * (1 + self.batch_cost * (self.slots - 1)))


@dataclass(frozen=True)
class Vote:
    at: float
    seed: int


@dataclass(frozen=True)
class Scenario:
    peers: tuple[PeerSpec, ...]
    votes: tuple[Vote, ...]
    faulty: int
    rate: float


def voter_tokens(seed: int, max_tokens: int) -> int:
    return min(max_tokens, max(8, round(max_tokens * random.Random(seed).uniform(0.5, 1.15))))


def make_scenario(
    peers: int, faulty_share: float, *, seed: int, load: float, votes: int | None, scale: float
) -> Scenario:
    rng = random.Random(f"{seed}:{peers}:{faulty_share}")
    counts = {name: int(peers * cls.share + 0.5) for name, cls in CLASSES.items() if name != "laptop"}
    counts["laptop"] = max(0, peers - sum(counts.values()))
    kinds = [name for name, count in counts.items() for _ in range(count)][:peers]
    rng.shuffle(kinds)
    faulty = min(peers, max(1, int(peers * faulty_share + 0.5))) if faulty_share > 0 else 0
    faulty_set = set(rng.sample(range(peers), faulty))
    mean_tokens = statistics.fmean(voter_tokens(n, MAX_TOKENS) for n in range(4000))
    specs = []
    for index, kind in enumerate(kinds):
        cls = CLASSES[kind]
        tokens_per_s = rng.uniform(*cls.tokens_per_s)
        rtt = cls.rtt_s * rng.lognormvariate(0.0, 0.5) * (8 if rng.random() < 0.1 else 1)
        specs.append(
            PeerSpec(
                index,
                kind,
                slots=rng.randint(*cls.slots),
                tokens_per_s=tokens_per_s,
                batch_cost=cls.batch_cost,
                prefill_s=PROMPT_TOKENS / (tokens_per_s * cls.prefill_speedup),
                rtt_s=rtt,
            )
        )
    capacity = sum(spec.capacity(mean_tokens) for spec in specs)
    rate = load * capacity / VOTERS
    count = votes if votes is not None else min(MAX_VOTES, max(MIN_VOTES, round(rate * HORIZON_S)))
    count = max(1, round(count * scale))
    arrivals, at = [], WARMUP_S
    for _ in range(count):
        at += rng.expovariate(rate)
        arrivals.append(Vote(at, rng.getrandbits(40) << 4))
    end, faults = at + DEADLINE_S + 30, random.Random(f"{seed}:{peers}:{faulty_share}:faults")
    specs = [replace(s, faults=fault_schedule(faults, end)) if s.index in faulty_set else s for s in specs]
    return Scenario(tuple(specs), tuple(arrivals), faulty, rate)


def fault_schedule(rng: random.Random, end: float) -> tuple[Fault, ...]:
    faults, at = [], -rng.uniform(0, 150)
    while at < end:
        at += rng.expovariate(1 / 60)
        kind: FaultKind = rng.choices(("slow", "drop", "hang"), (0.4, 0.3, 0.3))[0]
        duration = rng.uniform(15, 90)
        if at + duration > 0 and at < end:
            factor = rng.uniform(5, 10) if kind == "slow" else 1.0
            faults.append(Fault(max(0.0, at), at + duration, kind, factor))
        at += duration
    return tuple(faults)


# ---------------------------------------------------------------- virtual time


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: when nothing is ready, the clock jumps to the next timer."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            raise RuntimeError("the simulation stalled: nothing is scheduled")
        self.clock.now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: Clock) -> None:
        super().__init__(_VirtualSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


# ---------------------------------------------------------------- simulated peer


@dataclass(eq=False)
class _Job:
    n: int
    future: asyncio.Future[None]
    done: int = 0


@dataclass(eq=False)
class _Sequence:
    job: _Job
    left: float
    """Work left, in token steps."""


class SimPeer:
    """A serving engine on another machine, as a Backend."""

    def __init__(self, spec: PeerSpec, clock: Clock) -> None:
        self.spec = spec
        self.clock = clock
        self.label = spec.url.split("://", 1)[1]
        self.running: list[_Sequence] = []
        self.waiting: deque[_Sequence] = deque()
        self.held = 0
        """Sequences accepted and not finished (reading their prompt, waiting or decoding)."""
        self.losses: list[FaultKind] = []
        self._speed = 1.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._rng = random.Random(spec.index)

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("sim", MODEL, 32768, self.spec.slots, detail=self.spec.url)

    async def aclose(self) -> None:
        return None

    def fault(self) -> Fault | None:
        now = self.clock()
        return next((f for f in self.spec.faults if f.start <= now < f.end), None)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for fault in self.spec.faults:
            loop.call_at(fault.start, self._changed, fault, True)
            loop.call_at(fault.end, self._changed, fault, False)

    def _changed(self, fault: Fault, starting: bool) -> None:
        self._advance()
        if starting and fault.kind != "slow":
            self.losses.append(fault.kind)
            for sequence in [*self.running, *self.waiting]:
                if fault.kind == "drop" and not sequence.job.future.done():
                    sequence.job.future.set_exception(ConnectionResetError(f"{self.label}: connection reset"))
            self.running.clear()
            self.waiting.clear()
        self._settle()

    # -- decoding (a fluid model: every running sequence advances at the batch's rate)

    def _rate(self) -> float:
        return self._speed * self.spec.tokens_per_s / (1 + self.spec.batch_cost * (len(self.running) - 1))

    def _advance(self) -> None:
        now = self.clock()
        elapsed, self._last = now - self._last, now
        if elapsed > 0 and self.running and self._speed > 0:
            step = self._rate() * elapsed
            for sequence in self.running:
                sequence.left -= step

    def _settle(self) -> None:
        for sequence in [s for s in self.running if s.left <= EPS_TOKENS]:
            self.running.remove(sequence)
            job = sequence.job
            job.done += 1
            if job.done == job.n and not job.future.done():
                job.future.set_result(None)
        while self.waiting and len(self.running) < self.spec.slots:
            self.running.append(self.waiting.popleft())
        fault = self.fault()
        self._speed = 1.0 if fault is None else (1 / fault.factor if fault.kind == "slow" else 0.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.running and self._speed > 0:
            wait = min(s.left for s in self.running) / self._rate()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, wait), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._advance()
        self._settle()

    # -- the wire

    async def _travel(self) -> None:
        await asyncio.sleep(self.spec.rtt_s / 2 * self._rng.lognormvariate(0.0, 0.3))

    async def _reachable(self, epoch: int) -> None:
        """Raise like a refused or reset connection; never return while the peer hangs."""
        fault = self.fault()
        lost = self.losses[epoch] if epoch < len(self.losses) else None
        if (fault is not None and fault.kind == "drop") or lost == "drop":
            raise ConnectionRefusedError(f"{self.label}: connection refused")
        if (fault is not None and fault.kind == "hang") or lost == "hang":
            await asyncio.get_running_loop().create_future()

    async def status(self) -> int:
        """The health check: the sequences it holds, or an error like a failed HTTP check."""
        fault = self.fault()
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(CHECK_TIMEOUT_S)
            raise TimeoutError("unreachable: ReadTimeout")
        await self._travel()
        await self._travel()
        fault = self.fault()
        if fault is not None and fault.kind == "drop":
            raise ConnectionRefusedError("unreachable: ConnectError: connection refused")
        return self.held

    async def generate(self, request: GenerationRequest) -> list[Candidate]:
        try:
            return await asyncio.wait_for(self._serve(request), request.timeout)
        except asyncio.TimeoutError:
            partial = [Candidate(i, "", "timeout", request.sampling_for(i)) for i in range(request.n)]
            raise GenerationTimeout(f"{self.label} did not answer in time", partial=partial) from None

    async def _serve(self, request: GenerationRequest) -> list[Candidate]:
        started, epoch = self.clock(), len(self.losses)
        await self._travel()
        await self._reachable(epoch)
        seeds = [request.sampling_for(i).seed for i in range(request.n)]
        tokens = [voter_tokens(seed, request.max_tokens) for seed in seeds]
        self.held += request.n
        job = _Job(request.n, asyncio.get_running_loop().create_future())
        try:
            await asyncio.sleep(self.spec.prefill_s / max(self._speed, 0.1))
            await self._reachable(epoch)
            jitter = [random.Random(seed * 7919 + self.spec.index).lognormvariate(0, 0.1) for seed in seeds]
            work = [count * factor for count, factor in zip(tokens, jitter, strict=True)]
            self._advance()
            self.waiting.extend(_Sequence(job, w) for w in work)
            self._settle()
            await job.future
        finally:
            self.held -= request.n
            if not job.future.done():
                self._advance()
                self.running = [s for s in self.running if s.job is not job]
                self.waiting = deque(s for s in self.waiting if s.job is not job)
                self._settle()
        await self._travel()
        await self._reachable(epoch)
        elapsed = self.clock() - started
        return [
            Candidate(
                i,
                f"answer {seed}",
                "length" if count >= request.max_tokens else "stop",
                request.sampling_for(i),
                completion_tokens=count,
                prompt_tokens=PROMPT_TOKENS,
                elapsed_s=elapsed,
            )
            for i, (seed, count) in enumerate(zip(seeds, tokens, strict=True))
        ]


# ---------------------------------------------------------------- health loop (as Federation._watch)


async def check(peer: Peer, sim: SimPeer, clock: Clock) -> None:
    started = clock()
    try:
        active = await sim.status()
    except OSError as error:
        peer.check_failed(str(error))
        return
    peer.checked(clock() - started, active)
    if peer.backend is None:
        peer.backend = sim


async def watch(roster: Roster, sims: dict[str, SimPeer], clock: Clock, settings: FederationSettings) -> None:
    due: dict[str, float] = {}
    interval = settings.health_interval
    while True:
        now = clock()
        batch = [peer for peer in roster.snapshot() if due.get(peer.url, 0.0) <= now]
        await asyncio.gather(*(check(peer, sims[peer.url], clock) for peer in batch))
        for peer in batch:
            due[peer.url] = clock() + peer.health.next_check_in(interval)
        roster.expire(settings.gone_after)
        waits = [at - clock() for at in due.values()]
        await asyncio.sleep(max(0.05, min([interval, *waits])))


# ---------------------------------------------------------------- one policy over one scenario


@dataclass
class Outcome:
    answered: int
    seconds: float | None
    retried: int = 0
    degraded: bool = False
    lost_with_healthy: bool = False
    cause: str = ""


@dataclass
class Row:
    peers: int
    share: float
    faulty: int
    policy: Policy
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.seconds is not None)

    @property
    def lost(self) -> int:
        return sum(o.seconds is None for o in self.outcomes)

    def p(self, q: float) -> float:
        times = self.times
        return times[max(0, math.ceil(q * len(times)) - 1)] if times else math.nan


async def one_vote(engine: SwarmEngine, vote: Vote, sims: Sequence[SimPeer], clock: Clock) -> Outcome:
    await asyncio.sleep(max(0.0, vote.at - clock()))
    started = clock()
    try:
        result = await engine.generate(MESSAGES, VOTERS, max_tokens=MAX_TOKENS, seed=vote.seed)
    except SwarmError as error:
        healthy = any(sim.fault() is None for sim in sims)
        cause = "nowhere to place" if "unknown failure" in str(error) else "every voter failed"
        return Outcome(0, None, lost_with_healthy=healthy, cause=cause)
    return Outcome(len(result.candidates), clock() - started, result.retried, result.degraded)


async def simulate(scenario: Scenario, policy: Policy, clock: Clock) -> list[Outcome]:
    settings = FederationSettings()
    roster = Roster(
        policy=policy,
        failures_to_open=settings.failures_to_open,
        open_seconds=settings.open_seconds,
        clock=clock,
    )
    sims = {spec.url: SimPeer(spec, clock) for spec in scenario.peers}
    for url, sim in sims.items():
        peer = roster.upsert(url, "engine", "manual")
        peer.model, peer.slots = MODEL, sim.spec.slots
        sim.start()
    watcher = asyncio.create_task(watch(roster, sims, clock, settings))
    engine = SwarmEngine([], placement=roster, voter_timeout=DEADLINE_S)
    try:
        peers = list(sims.values())
        return list(await asyncio.gather(*(one_vote(engine, vote, peers, clock) for vote in scenario.votes)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def run_virtual(scenario: Scenario, policy: Policy) -> list[Outcome]:
    clock = Clock()
    loop = VirtualLoop(clock)
    try:
        with mock.patch("time.monotonic", clock):
            return loop.run_until_complete(simulate(scenario, policy, clock))
    finally:
        loop.close()


# ---------------------------------------------------------------- report


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| peers | faulty | policy | votes | lost | lost, healthy peer up | p50 s | p95 s | voters lost "
        "| voters retried | degraded |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        asked = VOTERS * len(row.outcomes)
        lines.append(
            f"| {row.peers} | {row.faulty} ({row.share:.0%}) | {row.policy} | {len(row.outcomes)} "
            f"| {row.lost} "
            f"| {sum(o.lost_with_healthy for o in row.outcomes)} | {row.p(0.5):.1f} | {row.p(0.95):.1f} "
            f"| {asked - sum(o.answered for o in row.outcomes)} | {sum(o.retried for o in row.outcomes)} "
            f"| {sum(o.degraded for o in row.outcomes)} |"
        )
    return lines


def progress(row: Row, scenario: Scenario, seconds: float) -> str:
    """An HTML comment: the hardware mix, the arrival rate, the wall time and why votes were lost."""
    kinds = [spec.hardware for spec in scenario.peers]
    mix = ", ".join(f"{kind} {kinds.count(kind)}" for kind in CLASSES if kind in kinds)
    causes = sorted({o.cause for o in row.outcomes if o.cause})
    lost = "".join(f", {cause}: {sum(o.cause == cause for o in row.outcomes)}" for cause in causes)
    return (
        f"<!-- {row.peers} peers ({mix}), {row.faulty} faulty, {row.policy}: {len(scenario.votes)} votes "
        f"at {scenario.rate:.2f}/s, {seconds:.1f} s wall{lost} -->"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peers", type=int, nargs="+", default=[3, 10, 50, 200])
    parser.add_argument("--faulty", type=float, nargs="+", default=[0.0, 0.1, 0.3], help="shares, 0 to 1")
    parser.add_argument("--votes", type=int, default=None, help="votes per scenario (default: 120 s of them)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the votes per scenario")
    parser.add_argument("--load", type=float, default=0.5, help="offered load, share of healthy capacity")
    args = parser.parse_args()
    logging.getLogger("swarm_lsp").setLevel(logging.CRITICAL)
    settings = FederationSettings()
    print(
        f"Seed {args.seed}; {VOTERS} voters, max_tokens {MAX_TOKENS}, deadline {DEADLINE_S:.0f} s; "
        f"offered load {args.load:.0%} of healthy capacity; health checks every "
        f"{settings.health_interval:.0f} s, breaker opens after {settings.failures_to_open} failures "
        f"for {settings.open_seconds:.0f} s. Times in simulated seconds.\n"
    )
    rows: list[Row] = []
    wall = time.perf_counter()
    for peers in args.peers:
        for share in args.faulty:
            scenario = make_scenario(
                peers, share, seed=args.seed, load=args.load, votes=args.votes, scale=args.scale
            )
            for policy in POLICIES:
                started = time.perf_counter()
                rows.append(Row(peers, share, scenario.faulty, policy, run_virtual(scenario, policy)))
                print(progress(rows[-1], scenario, time.perf_counter() - started), flush=True)
    print()
    print("\n".join(table(rows)))
    lost_healthy = sum(o.lost_with_healthy for row in rows if row.policy == "balanced" for o in row.outcomes)
    print(f"\nBalanced: {lost_healthy} vote(s) lost while a healthy peer was up (goal: 0).")
    print(f"Wall time {time.perf_counter() - wall:.0f} s. Goal: a ratio of at most {GOAL_RATIO:.2f}.\n")
    found = {row.policy: row.p(0.95) for row in rows if row.peers == 50 and row.share == 0.1}
    if "balanced" in found and "round-robin" in found and found["round-robin"] > 0:
        ratio = f"{found['balanced'] / found['round-robin']:.2f}"
    else:
        ratio = "n/a (not in this run)"
    print(f"p95 vs round-robin at 50 peers, 10% faulty: {ratio}")


if __name__ == "__main__":
    main()
