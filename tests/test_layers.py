"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, and they catch a wrong import.

The second half copies the package into a temporary folder, adds one import that breaks a rule, and
checks that `lint-imports` fails there and names the broken contract: a contract that can never fail
would prove nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: run `make setup` (import-linter is a dev dependency)")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].split("kept")[0]


@pytest.fixture(scope="module")
def copy_of_the_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package and its pyproject.toml in a folder of its own (lint-imports puts its cwd first on sys.path)."""
    folder = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "swarm_lsp", folder / "swarm_lsp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract"),
    [
        # A lower layer importing an upper one: the index reaching up into a front door.
        ("index/ignore.py", "import swarm_lsp.lsp.server", "Layers:"),
        # Two independent siblings: the swarm reading the index directly.
        ("swarm/engine.py", "import swarm_lsp.index.store", "Layers:"),
        # A door reaching past the core into the index.
        ("mcp/server.py", "import swarm_lsp.index.store", "Doors and tools reach the index"),
        ("api/chat.py", "import swarm_lsp.models.llamacpp", "Doors and tools reach the index"),
        # Two doors are independent: the HTTP API must not lean on the MCP door.
        ("api/server.py", "import swarm_lsp.mcp.server", "Layers:"),
        # A third-party library outside the one package that owns it.
        ("retrieval.py", "import lancedb", "lancedb only in the index store"),
        ("swarm/engine.py", "import tree_sitter", "tree_sitter only in code/"),
        ("lsp/server.py", "import starlette", "starlette only in api/"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    copy_of_the_project: Path, module: str, wrong_import: str, contract: str
) -> None:
    path = copy_of_the_project / "swarm_lsp" / module
    original = path.read_text()
    path.write_text(original + f"\n{wrong_import}  # deliberately wrong\n")
    try:
        result = lint_imports(copy_of_the_project)
    finally:
        path.write_text(original)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    broken = [line for line in output.splitlines() if line.strip().endswith("BROKEN")]
    assert any(contract in line for line in broken), output
