"""A hand-made JSON-RPC client of `swarm-lsp serve` over stdio, for the LSP fuzzer (no tests here).

Frames are written exactly as given (a body that is not JSON, odd headers), so the fuzzer can send
what no LSP library would; responses are read by id, and the server's own requests are answered
as an editor would (null, or an empty configuration).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ANSWER_TIMEOUT_S = 30.0


class RawServer:
    """`swarm-lsp serve` with a hand-made client: frames written as given, responses read by id."""

    def __init__(self, root: Path, data: Path) -> None:
        env = {
            **os.environ,
            "SWARM_LSP_MODEL__NAME": "bundled",
            "SWARM_LSP_INDEX__EMBEDDER": "none",
            "SWARM_LSP_INDEX__LOCATION": str(data),
            "SWARM_LSP_CONFIG_FILE": str(data / "no-user-config.toml"),
            "SWARM_LSP_SWARM__VOTERS": "1",
            "SWARM_LSP_SWARM__MAX_TOKENS": "4",
        }
        self.root = root
        self.stderr_path = data / "server.log"
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "swarm_lsp", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._ids = itertools.count(1)
        self._responses: dict[Any, list[dict[str, Any]]] = {}
        self._arrived = threading.Condition()
        self.unframed: list[bytes] = []
        """Header blocks without a Content-Length: anything on stdout but a message breaks the stream."""
        threading.Thread(target=self._read, daemon=True).start()

    # ----------------------------------------------------------------------------- wire

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def frame(self, body: bytes, headers: str = "") -> None:
        self.write(f"Content-Length: {len(body)}\r\n{headers}\r\n".encode() + body)

    def send(self, message: Any) -> None:
        self.frame(json.dumps(message).encode())

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii", "replace").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length is None:
                self.unframed.append(line)
                continue
            body = stream.read(length)
            try:
                message = json.loads(body)
            except ValueError:
                self.unframed.append(body)
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:  # the server asks the client: answer as an editor would
            result: Any = None
            if message["method"] == "workspace/configuration":
                result = [None for _ in message.get("params", {}).get("items", [])]
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})
            return
        if "method" in message:
            return  # a notification: logs, progress, diagnostics
        with self._arrived:
            self._responses.setdefault(json.dumps(message.get("id")), []).append(message)
            self._arrived.notify_all()

    # ------------------------------------------------------------------------- requests

    def next_id(self) -> Any:
        return next(self._ids)

    def request(self, method: str, params: Any = None, *, msg_id: Any = None) -> Any:
        msg_id = self.next_id() if msg_id is None else msg_id
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return msg_id

    def notify(self, method: str, params: Any = None) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def answer(self, msg_id: Any, timeout: float = ANSWER_TIMEOUT_S) -> list[dict[str, Any]]:
        """Every response with `msg_id` (waits for the first; AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        key = json.dumps(msg_id)
        with self._arrived:
            while key not in self._responses:
                left = deadline - time.monotonic()
                assert self.process.poll() is None, (
                    f"the server exited ({self.process.returncode}):\n{self.log()}"
                )
                assert left > 0, f"no response to request {msg_id!r} within {timeout:.0f}s:\n{self.log()}"
                self._arrived.wait(min(left, 1.0))
            return self._responses.pop(key)

    def responses_to(self, msg_id: Any) -> list[dict[str, Any]]:
        with self._arrived:
            return list(self._responses.get(json.dumps(msg_id), []))

    def wait_for_more(
        self, msg_id: Any, known: int, timeout: float = ANSWER_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        """The responses with `msg_id` after the first `known` of them (waits for at least one)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._responses.get(json.dumps(msg_id), [])) <= known:
                assert self.process.poll() is None, f"the server exited:\n{self.log()}"
                assert time.monotonic() < deadline, f"no new response with id {msg_id!r}:\n{self.log()}"
                self._arrived.wait(1.0)
            return self._responses[json.dumps(msg_id)][known:]

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        (response,) = self.answer(self.request(method, params))
        return response

    # ---------------------------------------------------------------------------- state

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.answer(self.request("shutdown"), timeout=30)
                self.notify("exit")
                self.process.wait(15)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(5)
        self._stderr.close()
