"""Each ranking rule of index/ranking.py on small crafted workspaces, through the real index.

The workspaces are full-text only (no embedder), which is also what a user has before any vector
exists; each test shows the rule changes the order by comparing against `RankingRules.none()` or
with the one rule switched off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_lsp.config import load_settings
from swarm_lsp.index.chunk_search import ChunkHit
from swarm_lsp.index.ranking import RankingRules, is_reexport, rank, understand
from swarm_lsp.workspace import Workspace


def make_workspace(root: Path, data: Path, files: dict[str, str]) -> Workspace:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    loaded = load_settings(root, {"index": {"location": str(data)}}, env={}, user_file=data / "none.toml")
    workspace = Workspace(root, loaded=loaded, embedder=None)
    workspace.index(embed=False)
    return workspace


@pytest.fixture
def build(tmp_path: Path) -> Iterator:
    opened: list[Workspace] = []

    def build_workspace(files: dict[str, str]) -> Workspace:
        workspace = make_workspace(tmp_path / f"repo{len(opened)}", tmp_path / f"data{len(opened)}", files)
        opened.append(workspace)
        return workspace

    yield build_workspace
    for workspace in opened:
        workspace.close()


def files_in_order(hits) -> list[str]:
    return list(dict.fromkeys(hit.path for hit in hits))


# ------------------------------------------------------------------------------- query understanding


@pytest.mark.parametrize(
    ("query", "kind", "names"),
    [
        ("BaseModel", "symbol", ("BaseModel",)),
        ("Field", "symbol", ("Field",)),
        ("Request.get_json", "symbol", ("Request.get_json",)),
        ("parse_cookie()", "symbol", ("parse_cookie",)),
        ("what does url_quote do with unicode", "mixed", ("url_quote",)),
        ("how does the Router pick an endpoint", "mixed", ("Router",)),
        ("where are cookies parsed from the request headers", "prose", ()),
    ],
)
def test_queries_are_told_apart(query: str, kind: str, names: tuple[str, ...]) -> None:
    shape = understand(query)
    assert shape.kind == kind
    assert shape.names == names


def test_a_query_that_asks_for_tests_or_examples_says_so() -> None:
    assert understand("tests for the multipart parser").wants_tests
    assert understand("an example of streaming a response").wants_examples
    assert not understand("parse the multipart body").wants_tests


def hit(chunk_id: str, path: str, mode: str) -> ChunkHit:
    return ChunkHit(chunk_id, path, 1, 5, None, "function", "python", "text", 1.0, frozenset({mode}))


def test_fusion_weights_follow_the_query_kind() -> None:
    by_text = [hit("t", "text.py", "fts"), hit("v", "vector.py", "fts")]
    by_meaning = [hit("v", "vector.py", "vector"), hit("t", "text.py", "vector")]
    symbol = rank(understand("SessionStore"), by_text, by_meaning, [], 2)
    assert [h.chunk_id for h in symbol] == ["t", "v"], "a name is found by its letters: full text counts more"
    assert symbol[0].score > symbol[1].score
    unweighted = rank(
        understand("SessionStore"), by_text, by_meaning, [], 2, RankingRules(query_weights=False)
    )
    assert unweighted[0].score == unweighted[1].score
    prose = rank(understand("where is the session stored"), by_text, by_meaning, [], 2)
    assert prose[0].score == prose[1].score, "for prose both lists count the same"


# ------------------------------------------------------------------------------------- definitions


MODEL_FILES = {
    # A long definition that names itself once: on text alone, short usages that repeat the name win.
    "app/models.py": (
        'class BaseModel:\n    """The base of all models."""\n\n    def save(self):\n'
        + "".join(
            f"        self.field_{i} = self.validate_field('field_{i}', self.raw_{i})\n" for i in range(12)
        )
    ),
    **{
        f"app/views{i}.py": (
            "from app.models import BaseModel\n\n\n"
            f"class View{i}(BaseModel):\n"
            "    # a BaseModel subclass: BaseModel fields, BaseModel validation, BaseModel saving\n"
            "    model = BaseModel\n"
        )
        for i in range(6)
    },
}


def test_a_symbol_query_ranks_its_definition_first(build) -> None:
    workspace = build(MODEL_FILES)
    hits = workspace.search("BaseModel", k=10, mode="fts")
    assert hits[0].path == "app/models.py" and hits[0].symbol == "BaseModel", files_in_order(hits)
    plain = workspace.search("BaseModel", k=10, mode="fts", rules=RankingRules.none())
    assert plain[0].path != "app/models.py", "the crafted usages outrank the definition on text alone"


def test_a_name_inside_a_sentence_finds_its_definition(build) -> None:
    workspace = build(MODEL_FILES)
    hits = workspace.search("what does BaseModel do when saving", k=5, mode="fts")
    assert "app/models.py" in files_in_order(hits)[:2], files_in_order(hits)


def test_a_qualified_method_name_finds_the_method(build) -> None:
    workspace = build(MODEL_FILES)
    hits = workspace.search("BaseModel.save", k=5, mode="fts")
    assert hits[0].path == "app/models.py", files_in_order(hits)
    assert "def save" in hits[0].text


# ------------------------------------------------------------------------------------- path priors


COOKIE_FILES = {
    "src/cookies.py": (
        "def parse_cookie(header):\n"
        '    """Split a Cookie header into a dict of names and values."""\n'
        "    pairs = [part.split('=', 1) for part in header.split(';') if '=' in part]\n"
        "    return {name.strip(): value for name, value in pairs}\n"
    ),
    "tests/test_cookies.py": (
        "from src.cookies import parse_cookie\n\n\n"
        "def test_parse_cookie_header():\n"
        "    # parse a cookie header: the cookie names and the cookie values of the header\n"
        "    assert parse_cookie('a=1; b=2') == {'a': '1', 'b': '2'}\n\n\n"
        "def test_parse_cookie_header_empty():\n"
        "    # an empty cookie header parses to no cookie\n"
        "    assert parse_cookie('') == {}\n"
    ),
}


def test_tests_rank_below_the_code_they_exercise(build) -> None:
    workspace = build(COOKIE_FILES)
    no_priors = dataclasses.replace(RankingRules(), path_priors=False, file_names=False)
    assert files_in_order(workspace.search("parse a cookie header", k=5, mode="fts", rules=no_priors))[0] == (
        "tests/test_cookies.py"
    ), "without priors the test file, which says 'cookie' most, wins"
    hits = workspace.search("parse a cookie header", k=5, mode="fts")
    assert files_in_order(hits)[0] == "src/cookies.py"


def test_a_query_that_asks_for_tests_gets_the_tests(build) -> None:
    workspace = build(COOKIE_FILES)
    hits = workspace.search("tests for parsing a cookie header", k=5, mode="fts")
    assert files_in_order(hits)[0] == "tests/test_cookies.py"


REEXPORT_FILES = {
    "engine/__init__.py": "from engine.core import Engine, start_engine\n\n__all__ = ['Engine', 'start_engine']\n",
    "engine/core.py": (
        'class Engine:\n    """Runs jobs."""\n\n    def run(self, job):\n        return job()\n\n\n'
        "def start_engine():\n    return Engine()\n"
    ),
}


def test_a_reexport_module_ranks_below_the_module_that_defines(build) -> None:
    workspace = build(REEXPORT_FILES)
    hits = workspace.search("start engine", k=5, mode="fts")
    assert files_in_order(hits)[0] == "engine/core.py", files_in_order(hits)
    assert is_reexport("engine/__init__.py", REEXPORT_FILES["engine/__init__.py"])
    assert not is_reexport("engine/core.py", REEXPORT_FILES["engine/core.py"])


# ----------------------------------------------------------------------------- file names, diversity


def test_a_file_named_by_the_query_ranks_higher(build) -> None:
    workspace = build(
        {
            # The file about routing never says the word in its (long) text; the server says it often.
            "web/routing.py": "def dispatch(table, url):\n"
            + "".join(f"    handler_{i} = table.get(url + '/{i}')\n" for i in range(15))
            + "    return table[url]\n",
            "web/server.py": (
                "def serve(app):\n    # routing: the routing table does routing elsewhere, not routing here\n"
                "    return app\n"
            ),
        }
    )
    no_names = dataclasses.replace(RankingRules(), file_names=False)
    assert files_in_order(workspace.search("routing", k=5, mode="fts", rules=no_names))[0] == "web/server.py"
    assert files_in_order(workspace.search("routing", k=5, mode="fts"))[0] == "web/routing.py"


def test_one_file_does_not_fill_the_top_results(build) -> None:
    many = "\n\n".join(
        f"def upload_part_{i}(stream):\n    # upload a multipart stream, part {i}\n    return stream.read({i})"
        for i in range(8)
    )
    workspace = build(
        {
            "net/uploads.py": many + "\n",
            "net/forms.py": "def read_multipart(stream):\n    # upload a multipart stream\n    return stream\n",
        }
    )
    no_diversity = dataclasses.replace(RankingRules(), diversity=False, coherence=False)
    plain = workspace.search("upload a multipart stream", k=3, mode="fts", rules=no_diversity)
    assert files_in_order(plain) == ["net/uploads.py"], "without damping one file fills the top three"
    diverse = workspace.search("upload a multipart stream", k=3, mode="fts")
    assert "net/forms.py" in files_in_order(diverse)


def test_the_file_ranking_agrees_with_the_flat_search(build) -> None:
    workspace = build({**COOKIE_FILES, **REEXPORT_FILES})
    for query in ("parse a cookie header", "start engine"):
        flat = files_in_order(workspace.search(query, k=10, mode="fts"))
        files = [path for path, _ in workspace.retriever.rank_files(query)]
        assert files[0] == flat[0], (query, flat, files)
