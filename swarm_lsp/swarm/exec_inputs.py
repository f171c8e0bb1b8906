"""Checks for code answers when none are given: generated inputs, and the original's behaviour.

A refactor or fix of Python functions is checked by running: the selection's top-level functions are
called with generated arguments (a fixed pool of small values of common types, combined
deterministically), and the calls that the *original* code answers without an error are kept. For a
refactor the original's outputs are the expected ones (a refactor keeps behaviour: candidates are
ranked by how many they reproduce); for a fix, which changes behaviour on purpose, only the
candidates' agreement with each other counts (MBR-exec). Either way the calls go to the `exec`
strategy's sandboxed harness, so nothing here runs code in this process.
"""

from __future__ import annotations

import ast
import itertools
import random
import textwrap
import zlib

from swarm_lsp.swarm.exec_harness import run_candidates
from swarm_lsp.swarm.exec_vote import ExecSpec
from swarm_lsp.swarm.tasks import Task

ARGUMENT_POOL = (
    "0", "1", "-3", "7", "2.5", "''", "'abc'", "'Hello World'", "[]", "[1, 2, 3]", "[2.5, -1.0]",
    "['b', 'a']", "{}", "{'a': 1, 'b': 2}", "None", "True", "(1, 2)",
)  # fmt: skip
"""Values tried for each parameter; calls the original rejects are dropped."""
MAX_FUNCTIONS = 2
MAX_CALLS = 12
"""Calls kept per task (the first that the original answers)."""
TRIED_PER_FUNCTION = 40
ORIGINAL_TIMEOUT_S = 5.0


def generated_checks(task: Task) -> ExecSpec | None:
    """An `ExecSpec` of generated calls for a refactor or fix of Python functions; None when the
    selection defines no callable function or the original answers fewer than two calls."""
    if task.kind not in ("refactor", "fix") or task.language != "python":
        return None
    original = textwrap.dedent(task.selection_text())
    calls = candidate_calls(original)
    if not calls:
        return None
    outcome = run_candidates(
        {0: original}, [], calls, timeout_s=ORIGINAL_TIMEOUT_S, total_timeout_s=None, notes=[]
    ).get(0)
    if outcome is None or outcome.error is not None:
        return None
    kept = [(call, output) for call, output in zip(calls, outcome.outputs, strict=True) if output is not None]
    kept = kept[:MAX_CALLS]
    if len(kept) < 2:
        return None
    expected = tuple(output for _, output in kept) if task.kind == "refactor" else ()
    return ExecSpec(language="python", inputs=tuple(call for call, _ in kept), expected=expected)


def candidate_calls(source: str) -> list[str]:
    """Calls of the top-level functions of `source` with generated arguments (deterministic)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    calls: list[str] = []
    for node in [n for n in tree.body if isinstance(n, ast.FunctionDef)][:MAX_FUNCTIONS]:
        arity = _required_arity(node)
        if arity is None:
            continue
        rng = random.Random(zlib.crc32(node.name.encode()))
        if arity == 0:
            calls.append(f"{node.name}()")
            continue
        combinations = list(itertools.product(range(len(ARGUMENT_POOL)), repeat=arity))
        for picked in rng.sample(combinations, min(TRIED_PER_FUNCTION, len(combinations))):
            calls.append(f"{node.name}({', '.join(ARGUMENT_POOL[i] for i in picked)})")
    return calls


def _required_arity(node: ast.FunctionDef) -> int | None:
    """How many positional arguments a call must give; None for methods and what cannot be generated
    (required keyword-only arguments, more than three parameters)."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    if positional and positional[0].arg in ("self", "cls"):
        return None
    if any(default is None for default in args.kw_defaults):
        return None
    required = len(positional) - len(args.defaults)
    return required if required <= 3 else None
