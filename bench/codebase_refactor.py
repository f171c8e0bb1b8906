"""Codebase-wide refactors on real projects: references found, edits made, whole-change success.

    python bench/codebase_refactor.py [--cases all|renames|NAME ...] [--voters 3] [--max-tokens 384]

Projects: pinned PyPI sdists (click 8.1.7 and itsdangerous 2.2.0, see `_projects.py`), copied fresh for
every run of every case, indexed full text only. Each case is one instruction:

- renames of a function used from several modules (mechanical: no model call);
- adding a parameter with a default and passing it at chosen call sites, and moving a helper to another
  module (these need judgement: they go to the swarm, the bundled SmolLM2-135M with `--voters`).

Each case runs twice on its own fresh copy, in the same run:

- **new**: `codebase.refactor_codebase` as it is now (blast radius from the index, mechanical rename or
  voted pieces, the whole change checked);
- **baseline**: the first wave's approach, one voted edit per definition that search retrieves
  (`codebase._voted`, at most 3 pieces), with no whole-change check.

The edits of each are written to the copy, then the case's own check decides success: the project's
tests (the test files that run in this environment) pass, and a crafted call that uses the new API
works. Recall is measured against the true set: every NAME token spelled like the old name in the
project's Python files, found by Python's own `tokenize` (independent of tree-sitter), less the tokens
the case lists as other objects. "found" is the share of true sites in the blast radius; "renamed" is
the share no longer spelled the old way after the edits. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _projects import fresh_copy, load_average, machine_line, project_source

from swarm_lsp.codebase import CodebaseResult, _voted, refactor_codebase
from swarm_lsp.config import load_settings
from swarm_lsp.renaming import changed_texts
from swarm_lsp.workspace import Workspace

PYTEST = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:asyncio -o filterwarnings="


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    tests: str
    """Test files that run here (some need packages this environment lacks)."""


CLICK = Project("click", "8.1.7", "tests")
ITSDANGEROUS = Project(
    "itsdangerous", "2.2.0", "tests/test_itsdangerous/test_encoding.py tests/test_itsdangerous/test_signer.py"
)


@dataclass(frozen=True)
class Case:
    name: str
    project: Project
    instruction: str
    call: str
    """Python run in the changed copy (with src/ on the path): must exit 0."""
    old: str = ""
    new: str = ""
    mechanical: bool = True


def rename(project: Project, old: str, new: str, call: str) -> Case:
    return Case(old, project, f"rename {old} to {new}", call, old, new)


CASES = [
    rename(CLICK, "format_filename", "display_filename",
           "import click; assert click.display_filename('a.txt') == 'a.txt'"),
    rename(CLICK, "strip_ansi", "remove_ansi",
           "from click._compat import remove_ansi as f; assert f('\\x1b[1mx\\x1b[0m') == 'x'"),
    rename(CLICK, "should_strip_ansi", "wants_plain_text",
           "from click._compat import wants_plain_text as f; f(None, True)"),
    rename(CLICK, "term_len", "visible_length",
           "from click._compat import visible_length as f; assert f('\\x1b[1mab\\x1b[0m') == 2"),
    rename(CLICK, "open_stream", "open_file_stream", "from click._compat import open_file_stream"),
    rename(CLICK, "split_opt", "split_option",
           "from click.parser import split_option as f; assert f('--x') == ('--', 'x')"),
    rename(CLICK, "make_default_short_help", "short_help_of",
           "from click.utils import short_help_of as f; assert f('Hello. World')"),
    rename(CLICK, "echo_via_pager", "page_output", "import click; click.page_output"),
    rename(ITSDANGEROUS, "want_bytes", "as_bytes",
           "from itsdangerous.encoding import as_bytes as f; assert f('a') == b'a'"),
    rename(ITSDANGEROUS, "base64_decode", "b64_decode",
           "from itsdangerous.encoding import b64_decode as d, base64_encode as e; assert d(e(b'x'))"),
    Case("add_parameter", CLICK,
         "Add a parameter `ellipsis: str = '...'` to make_default_short_help and use it instead of the "
         "literal '...' in its body",
         "from click.utils import make_default_short_help as f; f('a ' * 60, 9, ellipsis='~')",
         mechanical=False),
    Case("move_helper", CLICK,
         "Move the function safecall from click/utils.py to click/_compat.py and import it in utils.py",
         "from click._compat import safecall as a; from click.utils import safecall as b; assert a is b",
         mechanical=False),
]  # fmt: skip


@dataclass
class Run:
    edits: int = 0
    files: int = 0
    found: float | None = None
    renamed: float | None = None
    success: bool = False
    why: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def true_sites(root: Path, name: str) -> set[tuple[str, int, int]]:
    """Every NAME token spelled `name` in the project's Python files: (path, line, column)."""
    sites = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        try:
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
            for token in tokens:
                if token.type == tokenize.NAME and token.string == name:
                    sites.add((rel, token.start[0], token.start[1]))
        except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
            continue
    return sites


def check(root: Path, case: Case) -> tuple[bool, str]:
    """The case's crafted call, then the project's tests, in `root`."""
    env = {"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin", "HOME": str(root)}
    call = subprocess.run(
        [sys.executable, "-c", case.call], cwd=root, env=env, capture_output=True, text=True
    )
    if call.returncode:
        return False, "call: " + (call.stderr.strip().splitlines() or ["failed"])[-1][:90]
    tests = subprocess.run(
        [*PYTEST.split(), *case.project.tests.split()],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if tests.returncode:
        lines = [line for line in tests.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        return False, "tests: " + (lines[0] if lines else tests.stdout.strip()[-90:])[:90]
    return True, ""


def workspace_for(root: Path, data: Path, voters: int, max_tokens: int, project: Project) -> Workspace:
    values = {
        "index": {"location": str(data), "embedder": "none", "watch": False},
        "model": {"name": "bundled", "context_length": 4096},
        "swarm": {"voters": voters, "max_tokens": max_tokens},
        "refactor": {"test_command": f"{PYTEST} {project.tests}", "test_timeout": 600},
    }
    loaded = load_settings(root, values, env={}, user_file=data / "none.toml")
    workspace = Workspace(root, loaded=loaded)
    workspace.index()
    return workspace


def file_reader(root: Path):
    def read(rel: str) -> str | None:
        try:
            return (root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    return read


async def run_case(case: Case, scratch: Path, approach: str, voters: int, max_tokens: int) -> Run:
    source = project_source(case.project.name, case.project.version)
    root = fresh_copy(source, scratch / f"{case.name}-{approach}")
    truth = true_sites(root, case.old) if case.old else set()
    workspace = workspace_for(
        root, scratch / f"data-{case.name}-{approach}", voters, max_tokens, case.project
    )
    read = file_reader(root)
    run = Run()
    started = time.monotonic()
    try:
        if approach == "new":
            result = await refactor_codebase(workspace, case.instruction, read, voters=voters)
        else:
            result = await _voted(workspace, case.instruction, read, 3, voters, None, None, None)
        run.seconds = time.monotonic() - started
        _write(result, root, read, run)
        if case.old and approach == "new" and result.radius:
            found = {(s.path, s.line, s.start_col) for s in result.radius[0].sites}
            run.found = len(found & truth) / len(truth) if truth else None
    except Exception as error:  # a case that cannot be planned is a failure of that approach, reported
        run.seconds = time.monotonic() - started
        run.why = f"{type(error).__name__}: {error}"[:90]
        return run
    finally:
        await workspace.aclose()
    if case.old and truth:
        left = {site[:2] for site in true_sites(root, case.old)}
        run.renamed = 1 - len(left & {site[:2] for site in truth}) / len({site[:2] for site in truth})
    ok, why = check(root, case)
    run.success, run.why = ok, run.why or why
    return run


def _write(result: CodebaseResult, root: Path, read, run: Run) -> None:
    edits = result.edits
    run.edits, run.files = len(edits), len({edit.path for edit in edits})
    if result.check is not None and result.check.broken:
        run.notes.append("flagged: " + result.check.summary())
    for path, text in changed_texts(edits, read).items():
        (root / path).write_text(text, encoding="utf-8")


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=["all"], help="all, renames, or case names")
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=384)
    args = parser.parse_args()
    chosen = [
        case
        for case in CASES
        if "all" in args.cases or case.name in args.cases or ("renames" in args.cases and case.mechanical)
    ]
    print(f"<!-- {machine_line()}; load average {load_average()} -->")
    rows = []
    with tempfile.TemporaryDirectory(prefix="codebase-refactor-") as scratch:
        for case in chosen:
            for approach in ("new", "baseline"):
                run = await run_case(case, Path(scratch), approach, args.voters, args.max_tokens)
                rows.append((case, approach, run))
                print(f"<!-- {case.name} {approach}: {run} -->", file=sys.stderr, flush=True)
    print("| case | project | approach | edits | files | found | renamed | success | wall s | notes |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|---|")
    for case, approach, run in rows:
        why = "; ".join([run.why, *run.notes]).strip("; ").replace("|", "/")
        numbers = f"{run.edits} | {run.files} | {cell(run.found)} | {cell(run.renamed)}"
        success = "yes" if run.success else "no"
        where = f"{case.name} | {case.project.name} | {approach}"
        print(f"| {where} | {numbers} | {success} | {run.seconds:.1f} | {why} |")
    for approach in ("new", "baseline"):
        runs = [run for case, a, run in rows if a == approach]
        renames = [run for case, a, run in rows if a == approach and case.mechanical]
        found = [run.found for run in renames if run.found is not None]
        recall = f"{min(found):.2f} min, {sum(found) / len(found):.2f} mean" if found else "-"
        print(
            f"\n{approach}: {sum(r.success for r in runs)}/{len(runs)} whole-change successes "
            f"({sum(r.success for r in renames)}/{len(renames)} renames); reference recall {recall}"
        )
    print(f"<!-- load average after: {load_average()} -->")


if __name__ == "__main__":
    asyncio.run(main())
