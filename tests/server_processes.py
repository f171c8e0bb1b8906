"""Real swarm-lsp server processes for the tests: a command started, its URL read from its stderr.

`serving(command, env, ready_text)` starts `command`, waits for the stderr line holding `ready_text`
and a URL, yields a `ServerProcess` (the URL, the process, its stderr lines so far) and stops it.
`api_server(root, env, *args)` does so for `swarm-lsp api --workspace ROOT --port 0 ARGS`;
`api_env(tmp_path)` is an environment with the bundled model, a small swarm and a cache folder of the
test's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SWARM_LSP = str(Path(sys.executable).with_name("swarm-lsp"))
READY_LINE = "swarm-lsp API at"

FILES = {
    "pkg/__init__.py": "",
    "pkg/greeting.py": (
        '"""Greetings."""\n\n\n'
        "def greet(name: str) -> str:\n"
        '    """Say hello to `name`."""\n'
        '    return f"Hello, {name}!"\n'
    ),
    "pkg/maths.py": (
        "def add(a: int, b: int) -> int:\n    return a + b\n\n\n"
        "def mean(values: list[float]) -> float:\n    return sum(values) / len(values)\n"
    ),
    "README.md": "# Demo\n\nA tiny package with greet() and add().\n",
}


def write_workspace(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def api_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The bundled model, 3 voters of 48 tokens, full-text search; `settings` adds SWARM_LSP_* values."""
    env = dict(
        os.environ,
        SWARM_LSP_CONFIG_FILE=str(tmp_path / "no-user-config.toml"),
        SWARM_LSP_CACHE_DIR=str(tmp_path / "cache"),
        SWARM_LSP_MODEL__NAME="bundled",
        SWARM_LSP_MODEL__CONTEXT_LENGTH="2048",
        SWARM_LSP_SWARM__VOTERS="3",
        SWARM_LSP_SWARM__MAX_TOKENS="48",
        SWARM_LSP_INDEX__EMBEDDER="none",
    )
    env.update({f"SWARM_LSP_{key.upper()}": value for key, value in settings.items()})
    return env


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def serving(
    command: list[str], env: dict[str, str], ready_text: str, *, timeout: float = 90
) -> Iterator[ServerProcess]:
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if ready_text in line:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(timeout), f"{command[1]} did not start:\n" + "".join(lines)
        match = next((re.search(r"(http://\S+)", line) for line in lines if ready_text in line), None)
        assert match is not None, f"{command[1]} exited:\n" + "".join(lines)
        yield ServerProcess(match.group(1).rstrip("/"), process, lines)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def api_server(
    root: Path, env: dict[str, str], *args: str, timeout: float = 90
) -> contextlib.AbstractContextManager[ServerProcess]:
    """`swarm-lsp api` on a free loopback port for the workspace `root`."""
    command = [SWARM_LSP, "api", "--workspace", str(root), "--port", "0", *args]
    return serving(command, env, READY_LINE, timeout=timeout)
