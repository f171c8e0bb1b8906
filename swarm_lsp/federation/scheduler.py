"""Which machine runs how many voters of one vote.

`place()` spreads voters over nodes (this machine and trusted peers) one at a time, each to the
node where it would finish soonest, weighed by the node's model quality:

    finish(node, k) = latency + seconds_per_token * max_tokens * load(active + k, slots)
    cost(node, k)   = finish(node, k) / quality ** QUALITY_EXPONENT

`load(n, slots)` is the number of rounds of its slots the node needs for n sequences, each round
a little slower per extra sequence decoded in the same batch (`BATCH_COST`). A strong GPU peer
(many slots, fast tokens) therefore takes more voters and an overloaded one fewer. While
three or more nodes can take voters, none gets more than `MAX_SHARE` of them unless every other node
would take more than `SPREAD_FACTOR` times as long: a node that drops out mid-vote then costs a few
voters, not the answer. A node never measured counts as slow as the slowest one measured. With a
deadline, voters that no node is expected to finish in time are left out (never the first): fewer
answers in time beat none.

The policies "round-robin" and "random" ignore load, latency and speed; bench/federation_sim.py
compares them with "balanced" using the same health checks and failover.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Policy = Literal["balanced", "round-robin", "random"]
POLICIES: tuple[Policy, ...] = ("balanced", "round-robin", "random")

DEFAULT_SECONDS_PER_TOKEN = 0.05
"""While no node is measured, each is taken to write 20 tokens a second."""
QUALITY_EXPONENT = 0.5
BATCH_COST = 0.1
"""Each extra sequence in a batch makes every step of that batch this much slower (measured on
llama.cpp CPU batches it is 0.05 to 0.3; on a GPU less)."""
MAX_SHARE = 0.5
SPREAD_FACTOR = 2.0
"""A node at its share still takes a voter when every other node would cost more than this many times it."""


@dataclass(frozen=True)
class Node:
    key: str
    slots: int
    active: int = 0
    """Sequences it is already decoding or holding in its queue."""
    latency_s: float = 0.0
    seconds_per_token: float | None = None
    quality: float = 1.0


class Scheduler:
    def __init__(self, policy: Policy = "balanced", *, seed: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r}; one of {', '.join(POLICIES)}")
        self.policy = policy
        self._turn = 0
        self._random = random.Random(seed)

    def place(
        self, nodes: Sequence[Node], voters: int, *, max_tokens: int, deadline_s: float | None = None
    ) -> dict[str, int]:
        """Voters per node key (nodes that get none are left out). "balanced" may place fewer than
        `voters` when the rest would not finish within `deadline_s`; never fewer than one."""
        if voters <= 0 or not nodes:
            return {}
        if self.policy == "round-robin":
            counts = [nodes[(self._turn + i) % len(nodes)].key for i in range(voters)]
            self._turn = (self._turn + voters) % len(nodes)
            return _tally(counts)
        if self.policy == "random":
            return _tally(self._random.choice(nodes).key for _ in range(voters))
        return _balanced(nodes, voters, max_tokens, deadline_s)


def load(sequences: int, slots: int) -> float:
    """How many single-sequence decodes `sequences` at once cost on a node with `slots`."""
    if sequences <= 0:
        return 0.0
    slots = max(1, slots)
    return math.ceil(sequences / slots) * (1 + BATCH_COST * (min(sequences, slots) - 1))


def finish_estimate(node: Node, voters: int, max_tokens: int, fallback_speed: float) -> float:
    speed = node.seconds_per_token if node.seconds_per_token is not None else fallback_speed
    return node.latency_s + speed * max_tokens * load(node.active + voters, node.slots)


def _balanced(
    nodes: Sequence[Node], voters: int, max_tokens: int, deadline_s: float | None
) -> dict[str, int]:
    measured = [node.seconds_per_token for node in nodes if node.seconds_per_token is not None]
    # A node never measured is taken to be as slow as the slowest one measured: one voter finds out.
    fallback = max(measured) if measured else DEFAULT_SECONDS_PER_TOKEN
    cap = math.ceil(voters * MAX_SHARE) if len(nodes) >= 3 else voters
    counts = {node.key: 0 for node in nodes}

    def finish(node: Node) -> float:
        return finish_estimate(node, counts[node.key] + 1, max_tokens, fallback)

    def cost(node: Node) -> tuple[float, str]:
        return finish(node) / max(node.quality, 1e-3) ** QUALITY_EXPONENT, node.key

    for placed in range(voters):
        best = min(nodes, key=cost)
        if counts[best.key] >= cap:
            # The cap spreads the risk only while another node is nearly as good.
            open_nodes = [node for node in nodes if counts[node.key] < cap]
            alternative = min(open_nodes, key=cost) if open_nodes else None
            if alternative is not None and cost(alternative)[0] <= SPREAD_FACTOR * cost(best)[0]:
                best = alternative
        if placed and deadline_s is not None and finish(best) > deadline_s:
            break
        counts[best.key] += 1
    return {key: count for key, count in counts.items() if count}


def _tally(keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts
