"""Check a multi-file change as a whole before it is offered: it parses, it imports, its tests pass.

`check_change(root, new_texts, ...)` never touches the workspace:

1. **parse**: every changed file parses in its grammar (and, for Python, in Python's own parser);
2. **import** (Python): the workspace is copied to a temporary folder with the change applied, and
   the changed modules are imported there with this interpreter. The same modules are imported in a
   copy without the change, and only new failures count: a module that never imported here (a
   dependency this environment lacks) does not make the change look broken;
3. **tests**: the test command (`refactor.test_command`, or pytest when the workspace has tests and
   pytest is installed) runs in the changed copy, with a time limit. When it fails, it runs in the
   unchanged copy too, and failures that were there before are reported as such.

The copy leaves out version control, virtual environments, caches and build output. The command
runs as this user with a scrubbed environment and the copy as its working folder; it is not a
security sandbox (no network or file system isolation): run only tests you would run yourself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from swarm_lsp.blast_radius import module_of
from swarm_lsp.code.languages import detect_language
from swarm_lsp.code.syntax import python_error, syntax_errors

CheckLevel = Literal["parse", "import", "tests"]
COPY_IGNORED = (".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox",
                ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", "*.egg-info")  # fmt: skip
MAX_COPY_BYTES = 200 * 1024 * 1024
OUTPUT_KEPT = 4000
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT", "TMPDIR")


@dataclass
class TestRun:
    command: str
    passed: bool
    exit_code: int | None
    seconds: float
    output: str
    timed_out: bool = False
    failed_before: bool | None = None
    """When the tests fail with the change: whether they failed without it too (None: not run)."""


@dataclass
class CheckReport:
    level: CheckLevel
    syntax: list[str] = field(default_factory=list)
    """`path: line N: problem` for every changed file that does not parse."""
    imports: list[str] = field(default_factory=list)
    """`module: error` for changed modules that imported before the change and do not after."""
    tests: TestRun | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        tests_broke = self.tests is not None and not self.tests.passed and not self.tests.failed_before
        return bool(self.syntax or self.imports or tests_broke)

    def summary(self) -> str:
        if self.syntax:
            return f"does not parse: {self.syntax[0]}" + (
                f" (+{len(self.syntax) - 1})" if len(self.syntax) > 1 else ""
            )
        if self.imports:
            return f"breaks an import: {self.imports[0]}"
        if self.tests is not None and not self.tests.passed:
            if self.tests.failed_before:
                return f"tests fail, as they did before the change ({self.tests.command})"
            why = "timed out" if self.tests.timed_out else f"exit {self.tests.exit_code}"
            return f"breaks the tests ({self.tests.command}: {why})"
        checked = {"parse": "parses", "import": "parses and imports", "tests": "parses, imports, tests pass"}
        done = checked[
            "tests" if self.tests is not None else ("import" if self.level != "parse" else "parse")
        ]
        return f"checked: {done}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["broken"] = self.broken
        data["summary"] = self.summary()
        return data


def check_change(
    root: Path,
    new_texts: Mapping[str, str],
    *,
    level: CheckLevel = "tests",
    test_command: str = "",
    test_timeout: float = 120.0,
) -> CheckReport:
    report = CheckReport(level)
    for path, text in new_texts.items():
        language = detect_language(path, text)
        problems = [problem.describe() for problem in syntax_errors(language, text)]
        if language == "python" and not problems and (error := python_error(text)):
            problems = [error]
        report.syntax.extend(f"{path}: {problem}" for problem in problems[:3])
    python = [path for path in new_texts if path.endswith(".py")]
    if report.syntax or level == "parse" or (not python and not test_command):
        return report
    if _tree_bytes(root) > MAX_COPY_BYTES:
        report.notes.append(
            f"the workspace is over {MAX_COPY_BYTES >> 20} MB: only parsed, not imported or tested"
        )
        return report
    with tempfile.TemporaryDirectory(prefix="swarm-lsp-check-") as scratch:
        before, after = Path(scratch) / "before", Path(scratch) / "after"
        ignore = shutil.ignore_patterns(*COPY_IGNORED)
        shutil.copytree(root, before, ignore=ignore, symlinks=True)
        shutil.copytree(before, after, symlinks=True)
        for path, text in new_texts.items():
            target = after / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        modules = sorted({_module(path) for path in python} - {""})
        if modules:
            broken_after = _import_errors(after, modules)
            if broken_after:
                broken_before = _import_errors(before, modules)
                report.imports = [f"{m}: {e}" for m, e in broken_after.items() if m not in broken_before]
                kept = [m for m in broken_after if m in broken_before]
                if kept:
                    report.notes.append(
                        f"{len(kept)} module(s) did not import before the change either: {', '.join(kept)}"
                    )
        if report.imports or level != "tests":
            return report
        command = test_command or _detected_tests(after)
        if not command:
            report.notes.append("no test command: set refactor.test_command (pytest not found or no tests)")
            return report
        report.tests = _run(command, after, test_timeout)
        if not report.tests.passed:
            report.tests.failed_before = not _run(command, before, test_timeout).passed
    return report


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, names, files in os.walk(root):
        names[:] = [n for n in names if n not in COPY_IGNORED and not n.endswith(".egg-info")]
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
        if total > MAX_COPY_BYTES:
            break
    return total


def _module(path: str) -> str:
    """The importable module of a changed file ("" for tests and paths that are not module names)."""
    module = module_of(path)
    parts = module.split(".")
    if not module or any(not part.isidentifier() for part in parts) or parts[0] in ("tests", "test"):
        return ""
    return module


_IMPORTER = """
import importlib, json, sys
errors = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as error:
        errors[name] = f"{type(error).__name__}: {error}"[:300]
print(json.dumps(errors))
"""


def _import_errors(tree: Path, modules: list[str]) -> dict[str, str]:
    run = _run([sys.executable, "-c", _IMPORTER, *modules], tree, 60.0)
    try:
        return dict(json.loads(run.output.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {module: f"the import check failed: {run.output[-300:]}" for module in modules}


def _detected_tests(tree: Path) -> str:
    has_tests = any((tree / name).exists() for name in ("tests", "test", "pytest.ini", "conftest.py"))
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file() and "[tool.pytest" in pyproject.read_text(errors="replace"):
        has_tests = True
    if has_tests and importlib.util.find_spec("pytest") is not None:
        return f"{shlex.quote(sys.executable)} -m pytest -x -q -p no:cacheprovider"
    return ""


def _run(command: str | list[str], cwd: Path, timeout: float) -> TestRun:
    argv = shlex.split(command) if isinstance(command, str) else command
    shown = command if isinstance(command, str) else " ".join(shlex.quote(a) for a in argv[:3]) + " ..."
    env = {key: os.environ[key] for key in KEPT_ENV if key in os.environ}
    paths = [str(cwd), *(str(cwd / name) for name in ("src", "lib") if (cwd / name).is_dir())]
    env.update(HOME=str(cwd), PYTHONPATH=os.pathsep.join(paths), PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as expired:
        output = (
            (expired.stdout or b"").decode(errors="replace")
            if isinstance(expired.stdout, bytes)
            else (expired.stdout or "")
        )
        return TestRun(shown, False, None, time.monotonic() - started, output[-OUTPUT_KEPT:], timed_out=True)
    except OSError as error:
        return TestRun(shown, False, None, time.monotonic() - started, f"could not run: {error}")
    output = (done.stdout + done.stderr)[-OUTPUT_KEPT:]
    return TestRun(shown, done.returncode == 0, done.returncode, time.monotonic() - started, output)
