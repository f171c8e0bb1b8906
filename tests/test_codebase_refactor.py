"""The parts of a codebase-wide refactor on their own: occurrences, the blast radius over a real index,
rename parsing, edits applied together, and the whole-change check in a copy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from swarm_lsp.blast_radius import find_blast_radius, module_of
from swarm_lsp.change_check import check_change
from swarm_lsp.code.occurrences import name_occurrences
from swarm_lsp.config import load_settings
from swarm_lsp.renaming import RenameError, changed_texts, parse_rename, rename_edits
from swarm_lsp.swarm.tasks import Edit, TextRange
from swarm_lsp.workspace import Workspace

FILES = {
    "src/shop/__init__.py": "from .prices import total as total\n",
    "src/shop/prices.py": (
        "def total(items):\n    return sum(items)\n\n\nclass Basket:\n    def total(self):\n"
        "        return total(self.items)\n\n    def describe(self):\n        return str(self.total())\n"
    ),
    "src/shop/report.py": (
        "from shop.prices import total\nimport shop.prices as prices\n\n\n"
        "def report(items):\n    # total is summed here\n    return f'{total(items)} {prices.total(items)}'\n"
    ),
    "src/shop/other.py": "from statistics import mean as total\n\n\ndef avg(xs):\n    return total(xs)\n",
    "src/shop/uses_package.py": "import shop\n\n\ndef grand(items):\n    return shop.total(items)\n",
    "tests/test_shop.py": (
        "from shop.report import report\n\n\ndef test_report():\n    assert report([1, 2]) == '3 3'\n"
    ),
}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    data = tmp_path / "data"
    loaded = load_settings(
        root, {"index": {"location": str(data), "embedder": "none"}}, env={}, user_file=data / "none.toml"
    )
    workspace = Workspace(root, loaded=loaded)
    workspace.index()
    return workspace


def reader(workspace: Workspace):
    return lambda rel: (workspace.root / rel).read_text()


def test_occurrences_are_identifiers_with_their_role_never_strings_or_comments() -> None:
    text = "import m\n# fetch\ns = 'fetch'\ndef fetch():\n    return m.fetch(fetch, fetch=1)\n"
    found = [
        (o.line, o.start_col, o.role, o.qualifier) for o in name_occurrences("a.py", text, "fetch") or []
    ]
    assert found == [
        (4, 4, "definition", ""),
        (5, 13, "attribute", "m"),
        (5, 19, "use", ""),
        (5, 26, "keyword", ""),
    ]
    assert name_occurrences("notes.unknown-language", "fetch", "fetch") is None
    assert name_occurrences("a.py", "nothing here", "fetch") == []
    wide = name_occurrences("a.py", "x = 'é😀'; fetch()\n", "fetch")
    assert wide is not None and wide[0].start_col == 10, "columns are characters, not bytes"


def test_the_blast_radius_resolves_python_imports(workspace: Workspace) -> None:
    radius = find_blast_radius(workspace, "total", reader(workspace))
    assert [d.qualified_name for d in radius.definitions] == ["total"], (
        "the top-level function, not the method"
    )
    certain = {(s.path, s.line) for s in radius.certain}
    assert certain == {
        ("src/shop/prices.py", 1),  # the definition
        ("src/shop/prices.py", 7),  # a bare use in its module
        ("src/shop/__init__.py", 1),  # the re-export (both tokens of `total as total`)
        ("src/shop/report.py", 1),  # from shop.prices import total
        ("src/shop/report.py", 7),  # total(items) and prices.total(items)
        ("src/shop/uses_package.py", 5),  # shop.total: the package re-exports it
    }
    uncertain = {(s.path, s.line, s.why) for s in radius.uncertain}
    assert ("src/shop/prices.py", 6, "another definition with the same name") in uncertain
    assert ("src/shop/prices.py", 10, "self.total may be another object's") in uncertain
    assert all(path != "src/shop/other.py" or why for path, _line, why in uncertain)
    assert not any(s.path == "src/shop/other.py" and s.certain for s in radius.sites), (
        "statistics.mean as total"
    )
    assert radius.summary() == "12 site(s) of total in 5 file(s): 8 certain, 4 uncertain"
    assert module_of("src/shop/__init__.py") == "shop" and module_of("lib/a/b.py") == "a.b"


def test_a_rename_is_made_mechanically_and_its_edits_apply_together(workspace: Workspace) -> None:
    rename = parse_rename("Rename the function `total` to `grand_total`")
    assert rename is not None and (rename.old, rename.new) == ("total", "grand_total")
    radius = find_blast_radius(workspace, rename.old, reader(workspace), qualified=rename.qualified)
    texts = changed_texts(rename_edits(radius, rename), reader(workspace))
    assert texts["src/shop/__init__.py"] == "from .prices import grand_total as grand_total\n"
    assert (
        "def grand_total(items)" in texts["src/shop/prices.py"]
        and "def total(self)" in texts["src/shop/prices.py"]
    )
    assert "# total is summed here" in texts["src/shop/report.py"]
    assert "src/shop/other.py" not in texts
    method = find_blast_radius(workspace, "total", reader(workspace), qualified="Basket.total")
    assert {(s.line, s.certain) for s in method.sites if s.path == "src/shop/prices.py"} >= {
        (6, True),
        (10, True),
    }
    by_module = find_blast_radius(workspace, "total", reader(workspace), qualified="shop.prices.total")
    assert [d.qualified_name for d in by_module.definitions] == ["total"], (
        "module.function names the function"
    )
    for wording in ("change the name of total() to grand_total", "rename `prices.total` -> grand_total"):
        parsed = parse_rename(wording)
        assert parsed is not None and (parsed.old, parsed.new) == ("total", "grand_total"), wording
    assert parse_rename("make it faster") is None
    with pytest.raises(RenameError, match="keyword"):
        parse_rename("rename total to class")
    overlapping = [
        Edit("src/shop/other.py", TextRange(1, 1, 0, 10), "x", "from stati"),
        Edit("src/shop/other.py", TextRange(1, 1, 5, 12), "y", "statist"),
    ]
    with pytest.raises(ValueError, match="overlap"):
        changed_texts(overlapping, reader(workspace))


def test_the_whole_change_check_parses_imports_and_runs_the_tests_in_a_copy(workspace: Workspace) -> None:
    root = workspace.root
    before = {rel: (root / rel).read_text() for rel in FILES}
    assert check_change(root, {"src/shop/other.py": "def broken(:\n"}).syntax, "a syntax error is caught"
    renamed_only_here = {
        "src/shop/prices.py": before["src/shop/prices.py"].replace("def total", "def summed")
    }
    broken = check_change(root, renamed_only_here, level="import")
    assert broken.broken and any(line.startswith("shop.prices: ImportError") for line in broken.imports), (
        broken.imports
    )
    command = f"{sys.executable} -m pytest -q -p no:cacheprovider -p no:asyncio tests"
    fine = check_change(root, {"src/shop/other.py": before["src/shop/other.py"] + "\n"}, test_command=command)
    assert not fine.broken and fine.tests is not None and fine.tests.passed, fine.tests
    wrong = before["src/shop/report.py"].replace("{total(items)} ", "{total(items) + 1} ")
    failing = check_change(root, {"src/shop/report.py": wrong}, test_command=command)
    assert failing.broken and failing.tests is not None and failing.tests.failed_before is False
    assert "breaks the tests" in failing.summary()
    assert {rel: (root / rel).read_text() for rel in FILES} == before, "the workspace itself is never touched"
