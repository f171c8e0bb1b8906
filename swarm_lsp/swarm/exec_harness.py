"""Run candidate Python code in a sandboxed subprocess and report what each candidate did.

One harness process (`python -s -S`) runs the candidates one after another, each under a time limit
(an alarm, and a watchdog here that kills the process group when the alarm is ignored), with memory,
file-size and core-dump limits, sockets refused and proxies pointing nowhere. A killed harness is
restarted for the candidates it had not reached. The candidates' own output goes to /dev/null; the
harness reports on a private copy of stdout, one JSON line per event.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from swarm_lsp.swarm.ballots import plural

_STARTUP_S = 5.0
"""How long the harness may take to start and read its input before the watchdog gives up on it."""
_GRACE_S = 1.0
"""Beyond a candidate's own time limit, before the watchdog kills a candidate that ignored its alarm."""
INTERPRETER_EXITED = "the interpreter exited"
"""The `RunOutcome.error` of a candidate that ended the harness process (e.g. `os._exit`)."""
_MEMORY_LIMIT = 2 << 30
_FILE_SIZE_LIMIT = 64 << 20

# Runs in `python -s -S -c`; reads the job as JSON on stdin and writes one JSON line per event on a
# private copy of stdout (the candidates' own output goes to /dev/null).
_HARNESS = r"""
import builtins, hashlib, json, os, re, signal, sys

class _Timeout(BaseException):
    pass

def _on_alarm(signum, frame):
    raise _Timeout()

def _limit(job):
    try:
        import resource
        limits = (("RLIMIT_AS", job["memory"]), ("RLIMIT_FSIZE", job["file_size"]), ("RLIMIT_CORE", 0))
        for name, value in limits:
            limit = getattr(resource, name, None)
            if limit is not None:
                try:
                    resource.setrlimit(limit, (value, value))
                except (ValueError, OSError):
                    pass
    except ImportError:
        pass

def _block_network():
    import socket, _socket
    message = "network access is disabled for candidate code"
    def refuse(*args, **kwargs):
        raise OSError(message)
    class BlockedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError(message)
    class BlockedRawSocket(_socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError(message)
    socket.socket = socket.SocketType = BlockedSocket
    _socket.socket = _socket.SocketType = BlockedRawSocket
    names = ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
             "gethostbyaddr", "getnameinfo", "socketpair", "fromfd")
    for module in (socket, _socket):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, refuse)

def _output(value):
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:20]

def _run(candidate, job):
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    result = {"event": "done", "index": candidate["index"], "error": None, "timed_out": False,
              "tests": [], "outputs": []}
    try:
        try:
            exec(compile(candidate["code"], "<candidate>", "exec"), namespace)
        except _Timeout:
            raise
        except BaseException as error:
            result["error"] = type(error).__name__ + ": " + str(error)[:200]
        for test in job["tests"]:
            scope = dict(namespace)
            try:
                exec(compile(test["source"], "<test>", "exec"), scope)
            except _Timeout:
                raise
            except BaseException:
                result["tests"].extend([False] * max(1, len(test["functions"])))
                continue
            if not test["functions"]:
                result["tests"].append(True)
            for name in test["functions"]:
                try:
                    scope[name]()
                    result["tests"].append(True)
                except _Timeout:
                    raise
                except BaseException:
                    result["tests"].append(False)
        for expression in job["inputs"]:
            try:
                result["outputs"].append(_output(eval(expression, dict(namespace))))
            except _Timeout:
                raise
            except BaseException:
                result["outputs"].append(None)
    except _Timeout:
        result["timed_out"] = True
    return result

def _main():
    job = json.loads(sys.stdin.read())
    channel = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    _limit(job)
    _block_network()
    alarm = hasattr(signal, "setitimer")
    if alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    for candidate in job["candidates"]:
        channel.write(json.dumps({"event": "start", "index": candidate["index"]}) + "\n")
        channel.flush()
        try:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, job["timeout"])
            result = _run(candidate, job)
        except _Timeout:
            result = {"event": "done", "index": candidate["index"], "error": None, "timed_out": True,
                      "tests": [], "outputs": []}
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        channel.write(json.dumps(result) + "\n")
        channel.flush()

_main()
"""


@dataclass
class RunOutcome:
    """What running one candidate showed."""

    tests: list[bool]
    outputs: list[str | None]
    error: str | None = None
    timed_out: bool = False

    @property
    def clean(self) -> bool:
        return self.error is None and not self.timed_out


@dataclass(frozen=True)
class ExecTest:
    """One test source, and the `test_*` functions it defines (none: its asserts are the test)."""

    source: str
    functions: tuple[str, ...]

    @property
    def count(self) -> int:
        return max(1, len(self.functions))


def run_candidates(
    runnable: dict[int, str],
    tests: Sequence[ExecTest],
    inputs: Sequence[str],
    *,
    timeout_s: float,
    total_timeout_s: float | None,
    notes: list[str],
) -> dict[int, RunOutcome]:
    """Run the candidates one after another in one harness process, restarting it after a kill.

    `runnable` maps ballot index to source; `timeout_s` is per candidate (its module, tests and
    inputs together); `total_timeout_s` for all of them, None meaning `timeout_s` per candidate plus
    start-up. Candidates not run are missing from the result, and `notes` says why.
    """
    outcomes: dict[int, RunOutcome] = {}
    pending = sorted(runnable)
    budget = total_timeout_s
    if budget is None:
        budget = _STARTUP_S + len(pending) * (timeout_s + _GRACE_S)
    deadline = time.monotonic() + budget
    total_tests = sum(t.count for t in tests)
    with tempfile.TemporaryDirectory(prefix="swarm-lsp-exec-") as workdir:
        while pending:
            job = {
                "candidates": [{"index": i, "code": textwrap.dedent(runnable[i])} for i in pending],
                "tests": [{"source": t.source, "functions": list(t.functions)} for t in tests],
                "inputs": list(inputs),
                "timeout": timeout_s,
                "memory": _MEMORY_LIMIT,
                "file_size": _FILE_SIZE_LIMIT,
            }
            progressed = _run_harness(job, workdir, timeout_s, deadline, outcomes, total_tests, inputs)
            pending = [i for i in pending if i not in outcomes]
            if pending and not progressed:
                notes.append(f"{plural(len(pending), 'candidate')} not run: the exec harness did not start")
                break
            if pending and time.monotonic() >= deadline:
                notes.append(f"{plural(len(pending), 'candidate')} not run: the exec time budget ran out")
                break
    return outcomes


def _run_harness(
    job: dict,
    workdir: str,
    timeout_s: float,
    deadline: float,
    outcomes: dict[int, RunOutcome],
    total_tests: int,
    inputs: Sequence[str],
) -> bool:
    """One harness process; fills `outcomes`; False when it finished no candidate at all."""
    env = {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        # Proxies that point nowhere: a library that bypasses the socket block still cannot get out.
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "no_proxy": "",
    }
    posix = os.name == "posix"
    process = subprocess.Popen(
        [sys.executable, "-s", "-S", "-c", _HARNESS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        env=env,
        start_new_session=posix,
    )
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, name="swarm-lsp-exec-reader", daemon=True)
    reader.start()
    progressed = False
    current: int | None = None
    try:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps(job).encode())
            process.stdin.close()
        wait_until = time.monotonic() + _STARTUP_S
        while True:
            remaining = min(wait_until, deadline) - time.monotonic()
            try:
                line = lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                if current is not None:
                    outcomes[current] = RunOutcome(
                        [False] * total_tests, [None] * len(inputs), timed_out=True
                    )
                    progressed = True
                return progressed
            if line is None:
                if current is not None:
                    outcomes[current] = RunOutcome(
                        [False] * total_tests, [None] * len(inputs), error=INTERPRETER_EXITED
                    )
                    progressed = True
                return progressed
            event = json.loads(line)
            if event["event"] == "start":
                current = event["index"]
                wait_until = time.monotonic() + timeout_s + _GRACE_S
            else:
                outcomes[event["index"]] = RunOutcome(
                    _pad(event["tests"], total_tests, False),
                    _pad(event["outputs"], len(inputs), None),
                    event["error"],
                    event["timed_out"],
                )
                progressed = True
                current = None
                wait_until = time.monotonic() + _GRACE_S
    finally:
        _kill(process, posix)
        reader.join(timeout=1.0)
        if not reader.is_alive() and process.stdout is not None:
            process.stdout.close()


def _pad(values: list, length: int, filler: object) -> list:
    return (values + [filler] * length)[:length]


def _kill(process: subprocess.Popen, group: bool) -> None:
    """Kill the harness and whatever the candidates started, even when the harness itself has exited."""
    # The harness is not reaped yet, so its pid (the group id) cannot have been reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        elif process.poll() is None:
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
