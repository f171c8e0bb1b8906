"""Waiting for something to happen in a test, never for a fixed time.

A test that sleeps "long enough" for a server, watcher or thread to act is slow where the machine is
fast and flaky where it is busy. Wait on what the code under test signals: an Event or Future it
sets, a callback it makes, a notification the client receives, a line on the process's stderr, a
counter such as `Watcher.syncs`. Where nothing is signalled, poll the condition with `wait_until`
(or `wait_until_async` inside an event loop): a short interval, a deadline that only ends a hang
(no timing is asserted), and a failure that says what never happened and what was last seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEADLINE_S = 60.0
EVERY_S = 0.05


def wait_until(
    what: str, condition: Callable[[], T], *, timeout: float = DEADLINE_S, every: float = EVERY_S
) -> T:
    """Call `condition` every `every` seconds until it returns something truthy, and return that.
    After `timeout` seconds raise AssertionError naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")
        time.sleep(every)


async def wait_until_async(
    what: str,
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEADLINE_S,
    every: float = EVERY_S,
) -> T:
    """`wait_until` inside an event loop: sleeps without blocking the loop, and `condition` may be
    a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last: Any = condition()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")
        await asyncio.sleep(every)
