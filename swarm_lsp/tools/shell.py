"""run_command (execute): an argv or a shell string, in a folder of the workspace, with a time limit
and an output cap, its output streamed as progress.

The command is not sandboxed beyond its working folder: that is why the execute tier asks first.
A command that matches a destructive pattern (rm, git reset --hard, git clean, git push --force,
... plus `tools.destructive_commands`) is a destructive call and is asked for as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import os
import re
import shlex
import signal
import stat
import time
from collections.abc import Mapping, Sequence
from typing import Any

from swarm_lsp.redaction import is_secret_key
from swarm_lsp.tools.env import ToolEnv
from swarm_lsp.tools.registry import Output, Plan, Progress, Tier, Tool, ToolError

# Where a program name can start: the beginning, after ; & | ( ` $( or a quote (sh -c '...'), or after
# a word that runs its arguments (xargs, sudo, find -exec, ...). An optional path: /bin/rm.
_START = (
    r"(?:^|[;&|(`'\"]|\$\(|(?:\bxargs|\bsudo|\bexec|-exec|-execdir|\benv|\bnohup|\bnice|\btime)(?:\s+(?:-\S+|\w+=\S*))*\s)"
    r"\s*(?:\S*/)?"
)
DESTRUCTIVE_PATTERNS: tuple[str, ...] = (
    _START + r"(?:rm|rmdir|unlink|shred|wipefs|mkfs(?:\.\w+)?)\b",
    _START + r"dd\b[^|;&]*\bof=",
    _START + r"truncate\b",
    r"\bgit\b[^|;&]*\breset\b[^|;&]*--hard\b",
    r"\bgit\b[^|;&]*\bclean\b",
    r"\bgit\b[^|;&]*\brm\b",
    r"\bgit\b[^|;&]*\bpush\b[^|;&]*(?:\s--force\b|\s--force-with-lease\b|\s-[a-zA-Z]*f\b|\s\+\S)",
    r"\bgit\b[^|;&]*\bcheckout\b[^|;&]*(?:\s--(?:\s|$)|\s\.(?:\s|$)|\s-f\b|\s--force\b)",
    r"\bgit\b[^|;&]*\brestore\b",
    r"\bgit\b[^|;&]*\bbranch\b[^|;&]*\s(?:-D|--delete\s+--force)\b",
    r"\bgit\b[^|;&]*\bstash\b[^|;&]*\b(?:drop|clear)\b",
    r"\bgit\b[^|;&]*\b(?:filter-branch|filter-repo|update-ref\s+-d|reflog\s+expire|gc\s+--prune)\b",
    r"\bfind\b[^|;&]*\s-delete\b",
    r"\b(?:chmod|chown)\b[^|;&]*\s-[a-zA-Z]*R\b",
    r">\s*/dev/(?:sd|nvme|disk|hd)",
)
KILL_GRACE_S = 2.0
PROGRESS_EVERY_S = 0.2


def destructive_match(command: str, extra: tuple[str, ...] = ()) -> str | None:
    """The destructive pattern `command` matches, or None."""
    for pattern in (*DESTRUCTIVE_PATTERNS, *extra):
        if re.search(pattern, command):
            return pattern
    return None


def _command_text(command: str | list[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _prepare_run_command(env: ToolEnv, args: dict[str, Any]) -> Plan:
    command: str | list[str] = args["command"]
    if isinstance(command, str) and not command.strip():
        raise ToolError("the command is empty")
    if isinstance(command, list) and not command[0]:
        raise ToolError("argv[0], the program to run, is empty")
    folder = env.sandbox.resolve(args.get("cwd", "."), argument="cwd")
    try:
        if not stat.S_ISDIR(os.stat(folder.path).st_mode):
            raise ToolError(f"cwd {folder.shown} is not a folder")
    except FileNotFoundError:
        raise ToolError(f"cwd {folder.shown} does not exist") from None
    limit = env.settings.command_timeout
    timeout = min(float(args.get("timeout_s", limit)), limit)
    cap = env.settings.max_output_kb * 1000
    text = _command_text(command)
    try:
        extra = tuple(re.compile(pattern).pattern for pattern in env.settings.destructive_commands)
    except re.error as error:
        raise ToolError(f"tools.destructive_commands has an invalid regular expression: {error}") from None
    matched = destructive_match(text, extra)
    tier = Tier.DESTRUCTIVE if matched else Tier.EXECUTE

    environment, withheld = scrubbed_environment(os.environ, env.settings.command_env_allow)

    async def run(progress: Progress) -> Output:
        output = await _execute(command, folder.path, timeout, cap, progress, folder.shown, environment)
        note = ""
        if withheld:
            note = (
                f"\n[{len(withheld)} environment variable(s) named like secrets were not passed: "
                f"{', '.join(withheld)}; tools.command_env_allow lets one through]"
            )
        data = {**(output.data or {}), "withheld_variables": withheld}
        return dataclasses.replace(output, text=output.text + note, data=data)

    summary = f"run `{text}` in {folder.shown} (limit {timeout:g}s)"
    if matched:
        summary += " - matches a destructive pattern"
    return Plan(tier, summary, run)


def scrubbed_environment(
    environ: Mapping[str, str], allow: Sequence[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """This process's environment without the variables named like secrets (tokens, keys, passwords,
    credentials; the audit log's rule), except those `allow` names; and the names dropped."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in environ.items():
        if is_secret_key(name) and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allow):
            dropped.append(name)
        else:
            kept[name] = value
    return kept, sorted(dropped)


async def _execute(
    command: str | list[str],
    cwd: Any,
    timeout: float,
    cap: int,
    progress: Progress,
    shown_cwd: str,
    environment: Mapping[str, str],
) -> Output:
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(environment),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a time limit stops its children too
        )
    except FileNotFoundError:
        raise ToolError(f"{argv[0]!r} was not found; is it installed and on PATH?") from None
    except PermissionError:
        raise ToolError(f"{argv[0]!r} is not executable") from None
    started = time.monotonic()
    head = bytearray()
    tail = bytearray()
    total = 0
    last_progress = 0.0
    timed_out = False
    assert process.stdout is not None

    async def pump() -> None:
        nonlocal total, last_progress
        while True:
            chunk = await process.stdout.read(65536)
            if not chunk:
                return
            total += len(chunk)
            if len(head) < cap // 2:
                take = cap // 2 - len(head)
                head.extend(chunk[:take])
                chunk = chunk[take:]
            tail.extend(chunk)
            del tail[: max(0, len(tail) - cap // 2)]
            now = time.monotonic()
            if now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                recent = bytes(tail or head)[-400:].decode("utf-8", "replace")
                await progress(total, None, recent)

    try:
        try:
            await asyncio.wait_for(pump(), timeout)
            await asyncio.wait_for(process.wait(), max(0.1, timeout - (time.monotonic() - started)))
        except asyncio.TimeoutError:
            timed_out = True
            await _stop(process)
    except asyncio.CancelledError:
        await _stop(process)
        raise
    elapsed = time.monotonic() - started
    output = bytes(head).decode("utf-8", "replace")
    if total > len(head) + len(tail):
        output += f"\n[... {total - len(head) - len(tail):,} bytes cut (tools.max_output_kb) ...]\n"
    output += bytes(tail).decode("utf-8", "replace")
    code = process.returncode
    status = f"timed out after {timeout:g}s and was stopped" if timed_out else f"exit code {code}"
    text = f"{status} ({elapsed:.1f}s, in {shown_cwd})\n{output}"
    data = {
        "exit_code": None if timed_out else code,
        "timed_out": timed_out,
        "seconds": round(elapsed, 3),
        "output_bytes": total,
        "truncated": total > len(head) + len(tail),
    }
    return Output(text, data, is_error=timed_out or code != 0)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, then SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), KILL_GRACE_S)
            return
        except asyncio.TimeoutError:
            continue


RUN_COMMAND = Tool(
    name="run_command",
    tier=Tier.EXECUTE,
    escalates_to=Tier.DESTRUCTIVE,
    title="Run a command",
    description=(
        "Run a command in a folder of the workspace: an argv array (run directly) or a string (run by "
        "/bin/sh). Output (stdout and stderr together) streams as progress and is capped; the command is "
        "stopped at its time limit. Commands matching destructive patterns (rm, git reset --hard, git "
        "clean, git push --force, ...) are destructive."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "command": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ],
                "description": "an argv array, or a shell command string",
            },
            "cwd": {"type": "string", "default": ".", "description": "a folder inside the workspace"},
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "seconds (default: settings)",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    prepare=_prepare_run_command,
)

SHELL_TOOLS = [RUN_COMMAND]
