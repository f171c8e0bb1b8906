"""The file graph, its PageRank and the repo map, on small multi-file workspaces."""

from __future__ import annotations

import textwrap

import pytest

from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.index.chunker import parse_file
from swarm_lsp.index.graph import RepoGraph
from swarm_lsp.index.records import ParsedFile


def parse_all(files: dict[str, str]) -> list[ParsedFile]:
    return [parse_file(path, textwrap.dedent(text)) for path, text in files.items()]


WORKSPACE = {
    "b.py": """
        \"\"\"Shared helpers.\"\"\"


        def helper(value: int) -> int:
            \"\"\"Double a value.\"\"\"
            return value * 2


        class Store:
            def fetch_item(self, key: str) -> str:
                return key.upper()
        """,
    "a.py": """
        import b


        def main_loop():
            return b.helper(21)
        """,
    "c.py": """
        from b import Store, helper


        def report(store: Store) -> str:
            return store.fetch_item("x") + str(helper(1))
        """,
    "d.py": """
        def lonely_function():
            return 42
        """,
}


@pytest.fixture(scope="module")
def workspace() -> list[ParsedFile]:
    return parse_all(WORKSPACE)


def test_the_most_used_file_ranks_highest(workspace):
    graph = RepoGraph.build(workspace)
    assert ("a.py", "b.py") in graph.edges
    assert ("c.py", "b.py") in graph.edges
    assert not any(source == target for source, target in graph.edges)
    ranks = graph.rank()
    assert set(ranks) == {"a.py", "b.py", "c.py", "d.py"}
    assert sum(ranks.values()) == pytest.approx(1.0)
    assert max(ranks, key=ranks.get) == "b.py"
    assert ranks["b.py"] > 2 * ranks["d.py"]


def test_edges_name_what_they_are_made_of(workspace):
    graph = RepoGraph.build(workspace)
    assert set(graph.edge_names[("c.py", "b.py")]) >= {"Store", "helper", "fetch_item"}
    assert "helper" in graph.edge_names[("a.py", "b.py")]
    assert "module:b" in graph.edge_names[("a.py", "b.py")]  # `import b` resolves to b.py
    assert graph.neighbours("b.py").keys() == {"a.py", "c.py"}


def test_building_from_stored_symbols_and_references_gives_the_same_graph(workspace):
    from_files = RepoGraph.build(workspace)
    from_rows = RepoGraph.build(
        symbols=(s for parsed in workspace for s in parsed.symbols),
        references=(r for parsed in workspace for r in parsed.references),
        paths=[parsed.record.path for parsed in workspace],
    )
    assert from_rows.edges == from_files.edges
    assert from_rows.paths == from_files.paths
    assert from_rows.rank() == pytest.approx(from_files.rank())
    positional = RepoGraph.build(
        [s for parsed in workspace for s in parsed.symbols],
        [r for parsed in workspace for r in parsed.references],
    )
    assert positional.edges == from_files.edges


def test_personalisation_shifts_rank_toward_the_focus_files_neighbours():
    files = {
        "core/shared.py": """
            def shared_util():
                return 1
            """,
        "app/a.py": """
            from core.shared import shared_util


            def run_app():
                return shared_util()
            """,
        "app/b.py": """
            from core.shared import shared_util


            def run_batch():
                return shared_util()
            """,
        "tools/cli.py": """
            from tools.parser import parse_arguments


            def command_line():
                return parse_arguments()
            """,
        "tools/parser.py": """
            def parse_arguments():
                return []
            """,
    }
    graph = RepoGraph.build(parse_all(files))
    plain = graph.rank()
    focused = graph.rank({"tools/cli.py": 1.0})
    assert plain["core/shared.py"] > plain["tools/parser.py"]
    assert focused["tools/parser.py"] > plain["tools/parser.py"]
    assert focused["tools/parser.py"] > focused["core/shared.py"]
    # unknown paths in the personalisation are ignored
    assert graph.rank({"nowhere.py": 1.0}) == pytest.approx(plain)


def test_repo_map_lists_the_best_files_with_signatures_under_budget(workspace):
    graph = RepoGraph.build(workspace)
    text = graph.repo_map(200)
    assert text.startswith("b.py:\n")
    lines = text.split("\n")
    assert "     5  def helper(value: int) -> int:" in lines  # line number, then the signature
    assert "    10  class Store:" in lines
    assert "    11      def fetch_item(self, key: str) -> str:" in lines  # members nested under their class
    assert estimate_tokens(text) <= 200
    for budget in (5, 12, 20, 40, 80, 1000):
        assert estimate_tokens(graph.repo_map(budget)) <= budget
    assert graph.repo_map(0) == ""


def test_repo_map_follows_the_focus(workspace):
    graph = RepoGraph.build(workspace)
    focused = graph.repo_map(1000, focus_paths=["d.py"])
    assert focused.startswith("d.py:\n")
    assert "lonely_function" in focused


def test_generic_short_and_widely_defined_names_make_no_edges():
    files = {f"m{i}.py": "def process_record():\n    return 1\n" for i in range(7)}
    files["user.py"] = "def go():\n    get()\n    run()\n    ab()\n    process_record()\n"
    files["defs.py"] = "def get():\n    pass\n\ndef run():\n    pass\n\ndef ab():\n    pass\n"
    graph = RepoGraph.build(parse_all(files))
    # process_record is defined in 7 files (> 5), get/run are too common, ab too short
    assert not any(source == "user.py" for source, _ in graph.edges)
    assert RepoGraph.build(parse_all(files), max_definers=10).edges.keys() >= {("user.py", "m0.py")}


def test_javascript_relative_imports_resolve_to_files():
    files = {
        "src/app.js": """
            import { formatDate } from "./util/dates";
            import config from "../config.js";

            export function start() {
              return formatDate(config.now);
            }
            """,
        "src/util/dates.js": """
            export function formatDate(d) {
              return d.toISOString();
            }
            """,
        "config.js": """
            export default { now: new Date() };
            """,
    }
    graph = RepoGraph.build(parse_all(files))
    assert ("src/app.js", "src/util/dates.js") in graph.edges
    assert ("src/app.js", "config.js") in graph.edges


def test_python_relative_imports_resolve_within_the_package():
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import thing_maker\n\n\ndef use():\n    return thing_maker()\n",
        "pkg/b.py": "def thing_maker():\n    return 1\n",
        "other/b.py": "def unrelated_function():\n    return 2\n",
    }
    graph = RepoGraph.build(parse_all(files))
    assert "module:pkg.b" in graph.edge_names[("pkg/a.py", "pkg/b.py")]
    assert ("pkg/a.py", "other/b.py") not in graph.edges


def test_graph_across_languages():
    files = {
        "include/ring.h": "typedef struct ring ring_t;\nring_t *ring_new(unsigned long size);\n",
        "src/ring.c": '#include "ring.h"\n\nring_t *ring_new(unsigned long size) {\n  return 0;\n}\n',
        "src/main.c": '#include "ring.h"\n\nint main(void) {\n  return ring_new(16) != 0;\n}\n',
        "cmd/server.go": "package main\n\nfunc serve() {\n\tstartListener()\n}\n",
        "cmd/listen.go": "package main\n\nfunc startListener() {}\n",
    }
    graph = RepoGraph.build(parse_all(files))
    assert ("src/main.c", "include/ring.h") in graph.edges
    assert ("src/main.c", "src/ring.c") in graph.edges  # ring_new is defined there
    assert ("cmd/server.go", "cmd/listen.go") in graph.edges


def test_an_empty_graph():
    graph = RepoGraph.build([])
    assert graph.rank() == {}
    assert graph.repo_map(100) == ""
    lone = RepoGraph.build(paths=["README.md", "x.py"])
    assert lone.rank() == pytest.approx({"README.md": 0.5, "x.py": 0.5})


def test_a_files_own_definition_shadows_the_others():
    files = {
        "a.py": "def normalise_path(p):\n    return p\n\n\ndef use():\n    return normalise_path('x')\n",
        "b.py": "def normalise_path(p):\n    return p.strip()\n",
    }
    graph = RepoGraph.build(parse_all(files))
    assert graph.edges == {}
