"""IndexStore against a real LanceDB in a temporary directory, with small synthetic records."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from swarm_lsp.code.symbols import Reference, Symbol
from swarm_lsp.index import maintenance as maintenance_module
from swarm_lsp.index import store as store_module
from swarm_lsp.index import tables as tables_module
from swarm_lsp.index.chunk_search import SearchFilter
from swarm_lsp.index.errors import IndexNotReady, IndexStoreError, VectorSearchUnavailable
from swarm_lsp.index.records import Chunk, FileRecord, ParsedFile
from swarm_lsp.index.store import IndexStore
from swarm_lsp.index.text_query import split_identifier

DIM = 8


def parsed_file(path: str, functions: list[str], version: int = 0, language: str = "python") -> ParsedFile:
    """A file defining `functions`; `version` changes every body (and so every chunk id)."""
    symbols = []
    chunks = []
    for i, name in enumerate(functions):
        start, end = i * 10 + 1, i * 10 + 4
        symbols.append(
            Symbol(path, name, f"Module.{name}", "function", "Module", start, end, f"def {name}()", "")
        )
        text = f"def {name}(value):\n    # revision {version}\n    return value"
        chunks.append(Chunk(path, start, end, f"Module.{name}", "function", language, text))
    record = FileRecord(path, language, 100 + version, 1_000 + version, f"sha-{path}-{version}", f"# {path}")
    references = [Reference(path, "print", 2, "call"), Reference(path, "json", 1, "import")]
    return ParsedFile(record, symbols, chunks, references)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def open_store(directory: Path, embedder_id: str | None = "test-embedder", dimension: int | None = DIM):
    return IndexStore.open(directory, embedder_id=embedder_id, dimension=dimension)


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return open_store(tmp_path / "index")


def chunk_ids(store: IndexStore, path: str) -> list[str]:
    return [chunk.chunk_id for chunk in store.chunks(path)]


def all_chunk_ids(store: IndexStore) -> list[str]:
    return store._select("chunks", None, ["chunk_id"]).column("chunk_id").to_pylist()


# ------------------------------------------------------------------ writes and reads


def test_replace_then_full_text_search_finds_the_chunk(store: IndexStore) -> None:
    store.replace_files([parsed_file("src/app.py", ["load_config", "render_page"])])

    hits = store.search_fts("render page", k=5)

    assert hits[0].path == "src/app.py"
    assert hits[0].symbol == "Module.render_page"
    assert hits[0].modes == frozenset({"fts"})
    assert hits[0].start_line == 11 and hits[0].end_line == 14
    assert store.file_record("src/app.py").sha256 == "sha-src/app.py-0"
    assert store.outline("src/app.py") == "# src/app.py"
    assert store.files()["src/app.py"].size == 100


def test_identifiers_are_split_for_full_text(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["get_json", "parseHTTPRequest", "unrelated"])])

    for query in ("get json", "getJson", "get_json"):
        assert store.search_fts(query, k=1)[0].symbol == "Module.get_json", query
    for query in ("parse http request", "parse_http_request", "parseHTTPRequest"):
        assert store.search_fts(query, k=1)[0].symbol == "Module.parseHTTPRequest", query
    assert split_identifier("parseHTTPRequest") == ["parse", "HTTP", "Request"]
    assert split_identifier("__init__") == ["init"]


def test_replacing_a_file_again_leaves_no_duplicates_and_no_old_chunks(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["one", "two", "three"]), parsed_file("b.py", ["keep"])])
    old_ids = set(chunk_ids(store, "a.py"))

    store.replace_files([parsed_file("a.py", ["one", "two"], version=1)])
    store.replace_files([parsed_file("a.py", ["one", "two"], version=1)])  # the same content twice

    new_ids = chunk_ids(store, "a.py")
    assert len(new_ids) == 2 and not old_ids & set(new_ids)
    assert len(all_chunk_ids(store)) == len(set(all_chunk_ids(store))) == 3
    assert [s.name for s in store.symbols(path="a.py")] == ["one", "two"]
    assert len(store.references(path="a.py")) == 2
    assert store.file_record("a.py").sha256 == "sha-a.py-1"
    assert len(store.files()) == 2
    assert store.search_fts("three", k=5) == []
    assert [c.symbol for c in store.chunks("b.py")] == ["Module.keep"]


def test_delete_files_removes_rows_from_every_table(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["alpha"]), parsed_file("b.py", ["beta"])])

    store.delete_files(["a.py"])

    assert set(store.files()) == {"b.py"}
    assert store.chunks("a.py") == [] and store.symbols(path="a.py") == []
    assert store.references(path="a.py") == [] and store.file_record("a.py") is None
    assert store.search_fts("alpha", k=5) == []
    stats = store.stats()
    assert (stats.files, stats.chunks, stats.symbols, stats.references) == (1, 1, 1, 2)


def test_symbol_lookups(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["get_json", "put"]), parsed_file("b.py", ["get_json"])])

    assert [s.path for s in store.find_symbol("get_json")] == ["a.py", "b.py"]
    assert [s.path for s in store.find_symbol("Module.put")] == ["a.py"]
    assert store.find_symbol("missing") == []
    assert [s.path for s in store.symbols(name="get_json", path="b.py")] == ["b.py"]
    assert {r.name for r in store.references(name="print")} == {"print"}
    assert len(store.references()) == 4


def test_paths_with_quotes_and_unicode(store: IndexStore) -> None:
    awkward = ["it's.py", 'say "hi".py', "données/日本語.py", "back\\slash.py", "new\nline.py", "50%_off.py"]
    store.replace_files([parsed_file(path, [f"f{i}"]) for i, path in enumerate(awkward)])
    store.replace_files([parsed_file(path, [f"f{i}"], version=1) for i, path in enumerate(awkward)])

    assert set(store.files()) == set(awkward)
    for path in awkward:
        assert len(store.chunks(path)) == 1, path
        assert store.file_record(path).sha256 == f"sha-{path}-1"
        assert [
            hit.path for hit in store.search_fts("revision", k=10, filter=SearchFilter(paths=[path]))
        ] == [path]

    store.delete_files(awkward[:3])
    assert set(store.files()) == set(awkward[3:])
    assert store.stats().chunks == 3


def test_search_filters(store: IndexStore) -> None:
    store.replace_files(
        [
            parsed_file("src/a.py", ["handler"]),
            parsed_file("src2/b.py", ["handler"]),
            parsed_file("lib/c.js", ["handler"], language="javascript"),
        ]
    )

    def paths(search_filter: SearchFilter) -> set[str]:
        return {hit.path for hit in store.search_fts("handler", k=10, filter=search_filter)}

    assert paths(SearchFilter(path_prefix="src/")) == {"src/a.py"}
    assert paths(SearchFilter(languages=["javascript"])) == {"lib/c.js"}
    assert paths(SearchFilter(kinds=["class"])) == set()
    assert paths(SearchFilter(paths=[])) == set()


def test_a_path_given_twice_in_one_batch_keeps_the_last(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["first"]), parsed_file("a.py", ["second"], version=1)])

    assert [c.symbol for c in store.chunks("a.py")] == ["Module.second"]
    assert store.stats().files == 1


def test_bad_input_is_refused_before_anything_is_written(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["one"])])
    misplaced = parsed_file("b.py", ["two"])
    misplaced.chunks.append(Chunk("elsewhere.py", 1, 2, None, "text", "text", "stray"))
    changed = parsed_file("a.py", ["one"], version=1)

    with pytest.raises(ValueError, match=r"elsewhere\.py"):
        store.replace_files([changed, misplaced])
    with pytest.raises(ValueError, match="8 numbers"):
        store.replace_files([changed], {changed.chunks[0].chunk_id: [0.5] * 3})

    assert set(store.files()) == {"a.py"}
    assert store.file_record("a.py").sha256 == "sha-a.py-0"
    assert len(store.chunks("a.py")) == 1 and store.chunks("b.py") == []


def test_rows_are_full_text_searchable_right_after_a_write(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["existing_function"])])
    store.maybe_optimize(force=True)  # the FTS index now covers every row
    assert store.stats().fts_unindexed_rows == 0

    store.replace_files([parsed_file("b.py", ["brand_new_function"])])

    assert store.stats().fts_unindexed_rows > 0
    assert store.search_fts("brand new", k=1)[0].path == "b.py"
    store.maybe_optimize(force=True)
    assert store.stats().fts_unindexed_rows == 0
    assert store.search_fts("brand new", k=1)[0].path == "b.py"


# ------------------------------------------------------------------- vectors


def test_vectors_filled_later_become_visible_to_vector_search(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["one", "two", "three"])])
    pending = store.chunks_missing_vectors(10)
    assert len(pending) == 3
    assert store.search_vector(unit(0), k=5) == []
    assert store.stats().embedding_backlog == 3

    vectors = {item.chunk_id: unit(i) for i, item in enumerate(pending)}
    assert store.set_vectors(vectors) == 3

    hits = store.search_vector(unit(1), k=3)
    assert hits[0].chunk_id == pending[1].chunk_id
    assert hits[0].modes == frozenset({"vector"})
    assert hits[0].vector_distance == pytest.approx(0.0, abs=1e-5)
    assert store.chunks_missing_vectors(10) == []
    stats = store.stats()
    assert (stats.chunks_with_vectors, stats.embedding_backlog) == (3, 0)


def test_set_vectors_skips_chunks_that_no_longer_exist(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["one"])])
    stale = store.chunks_missing_vectors(10)[0]
    store.replace_files([parsed_file("a.py", ["one"], version=1)])

    assert store.set_vectors({stale.chunk_id: unit(0)}) == 0
    assert store.stats().chunks == 1


def test_priority_paths_come_first(store: IndexStore) -> None:
    store.replace_files([parsed_file(f"f{i}.py", ["a", "b"]) for i in range(5)])
    wanted = {chunk.chunk_id for chunk in store.chunks("f3.py")}

    pending = store.chunks_missing_vectors(3, priority_paths=["f3.py"])

    assert len(pending) == 3
    assert {item.chunk_id for item in pending[:2]} == wanted


def test_embedding_cache_round_trip_and_reuse(store: IndexStore) -> None:
    store.cache_vectors({"hash-a": unit(1), "hash-b": unit(2)})
    store.cache_vectors({"hash-a": unit(9)})  # insert-if-absent: the first vector stays

    cached = store.cached_vectors(["hash-a", "hash-b", "hash-c"])
    assert set(cached) == {"hash-a", "hash-b"}
    np.testing.assert_allclose(cached["hash-a"], unit(1), rtol=1e-6)
    assert store.stats().cached_embeddings == 2

    # A chunk whose text was embedded before needs no embedding: replace_files takes it from the cache.
    store.replace_files([parsed_file("a.py", ["one"])])
    item = store.chunks_missing_vectors(10)[0]
    store.set_vectors({item.chunk_id: unit(3)})  # also caches it
    store.replace_files([parsed_file("copy.py", ["one"])])  # the same text in another file
    assert store.chunks_missing_vectors(10) == []
    assert store.search_vector(unit(3), k=2)[1].vector_distance == pytest.approx(0.0, abs=1e-5)


def test_vectors_given_with_the_write(store: IndexStore) -> None:
    parsed = parsed_file("a.py", ["one", "two"])
    vectors = {parsed.chunks[0].chunk_id: unit(5)}

    store.replace_files([parsed], vectors)

    assert [item.chunk_id for item in store.chunks_missing_vectors(10)] == [parsed.chunks[1].chunk_id]
    assert store.search_vector(unit(5), k=1)[0].chunk_id == parsed.chunks[0].chunk_id
    assert parsed.chunks[0].text_hash in store.cached_vectors([parsed.chunks[0].text_hash])


def test_bad_vectors_are_refused(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["one"])])
    chunk_id = store.chunks_missing_vectors(1)[0].chunk_id
    with pytest.raises(ValueError, match="8 numbers"):
        store.set_vectors({chunk_id: [1.0, 2.0]})
    with pytest.raises(ValueError, match="NaN"):
        store.set_vectors({chunk_id: [float("nan")] * DIM})


def test_hybrid_ranks_a_chunk_found_by_both_searches_first(store: IndexStore) -> None:
    query_vector = unit(100)
    both = parsed_file("both.py", ["tokenize_source"])
    text_only = parsed_file("text_only.py", ["tokenize_source"])
    vector_only = parsed_file("vector_only.py", ["unrelated_name"])
    store.replace_files([text_only, vector_only, both])
    near = query_vector + 0.05 * unit(7)
    store.set_vectors(
        {
            both.chunks[0].chunk_id: near / np.linalg.norm(near),
            vector_only.chunks[0].chunk_id: query_vector,  # the nearest vector, but no text match
        }
    )  # text_only has no vector yet: it must still rank through full text

    hits = store.search_hybrid("tokenize source", query_vector, k=5)

    assert hits[0].path == "both.py"
    assert hits[0].modes == frozenset({"fts", "vector"})
    assert hits[0].fts_score is not None and hits[0].vector_distance is not None
    by_path = {hit.path: hit for hit in hits}
    assert by_path["text_only.py"].modes == frozenset({"fts"})
    assert by_path["vector_only.py"].modes == frozenset({"vector"})
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_hybrid_without_a_query_vector_is_full_text(store: IndexStore) -> None:
    store.replace_files([parsed_file("a.py", ["needle"])])

    hits = store.search_hybrid("needle", None, k=3)

    assert [hit.path for hit in hits] == ["a.py"] and hits[0].modes == frozenset({"fts"})


def test_vector_index_is_built_only_past_the_threshold(store: IndexStore) -> None:
    files = [parsed_file(f"f{i:03}.py", [f"fn{j}" for j in range(5)]) for i in range(70)]
    store.replace_files(files)
    pending = store.chunks_missing_vectors(1000)
    rng = np.random.default_rng(0)
    store.set_vectors({item.chunk_id: rng.normal(size=DIM) for item in pending[:300]})  # 50 stay null

    assert store.create_vector_index_if_needed() is False  # far below VECTOR_INDEX_MIN_ROWS
    assert store.create_vector_index_if_needed(min_rows=301) is False
    assert store.create_vector_index_if_needed(min_rows=300) is True
    assert store.stats().vector_index is True
    assert store.create_vector_index_if_needed(min_rows=300) is False  # already there

    target = store.search_vector(np.ones(DIM), k=10)
    assert len(target) == 10 and all(hit.vector_distance is not None for hit in target)


# ------------------------------------------------------------- opening and rebuilds


def test_reopening_with_the_same_settings_keeps_the_data(tmp_path: Path) -> None:
    first = open_store(tmp_path)
    first.replace_files([parsed_file("a.py", ["one"])])

    second = open_store(tmp_path)

    assert second.rebuilt_reason is None
    assert set(second.files()) == {"a.py"}
    assert second.stats().updated_at is not None


def test_a_different_embedder_rebuilds_and_says_why(tmp_path: Path) -> None:
    first = open_store(tmp_path, embedder_id="model-a")
    first.replace_files([parsed_file("a.py", ["one"])])
    first.set_vectors({item.chunk_id: unit(0) for item in first.chunks_missing_vectors(5)})

    second = open_store(tmp_path, embedder_id="model-b")

    assert "embedder changed" in second.rebuilt_reason and "model-a" in second.rebuilt_reason
    assert second.files() == {} and second.stats().chunks == 0
    assert second.stats().cached_embeddings == 1  # the cache survives; model-a's entry is not used
    assert second.cached_vectors([parsed_file("a.py", ["one"]).chunks[0].text_hash]) == {}

    third = open_store(tmp_path, embedder_id="model-b", dimension=16)
    assert "dimension changed" in third.rebuilt_reason


def test_a_new_schema_version_rebuilds_and_keeps_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_store(tmp_path)
    first.replace_files([parsed_file("a.py", ["one"])])
    text_hash = first.chunks_missing_vectors(1)[0].text_hash
    first.cache_vectors({text_hash: unit(4)})

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", store_module.SCHEMA_VERSION + 1)
    second = open_store(tmp_path)

    assert "format changed" in second.rebuilt_reason
    assert second.files() == {}
    second.replace_files([parsed_file("a.py", ["one"])])
    assert second.chunks_missing_vectors(5) == []  # the vector came from the cache
    assert json.loads((tmp_path / "meta.json").read_text())["schema_version"] == store_module.SCHEMA_VERSION


def test_unreadable_metadata_rebuilds(tmp_path: Path) -> None:
    open_store(tmp_path).replace_files([parsed_file("a.py", ["one"])])
    (tmp_path / "meta.json").write_text("{not json")

    store = open_store(tmp_path)

    assert "metadata" in store.rebuilt_reason and store.files() == {}
    assert open_store(tmp_path).rebuilt_reason is None


def test_full_text_only_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(tmp_path, embedder_id=None, dimension=None)
    store.replace_files([parsed_file("a.py", ["searchable_thing"])])

    assert store.vector_search_available is False
    assert store.search_fts("searchable", k=1)[0].path == "a.py"
    with pytest.raises(VectorSearchUnavailable):
        store.search_vector(unit(0), k=1)
    with caplog.at_level(logging.WARNING, logger="swarm_lsp.index.store"):
        first = store.search_hybrid("searchable", unit(0), k=3)
        store.search_hybrid("searchable", None, k=3)
    assert [hit.modes for hit in first] == [frozenset({"fts"})]
    assert sum("full-text search only" in record.message for record in caplog.records) == 1
    assert store.chunks_missing_vectors(10) == []
    assert store.cached_vectors(["x"]) == {}
    stats = store.stats()
    assert (stats.embedding_backlog, stats.chunks_with_vectors, stats.embedder_id) == (0, 0, None)

    with_embedder = open_store(tmp_path)
    assert "none (full-text only) -> test-embedder" in with_embedder.rebuilt_reason


def test_read_only_store(tmp_path: Path) -> None:
    with pytest.raises(IndexNotReady):
        IndexStore.open(tmp_path / "nothing", embedder_id=None, dimension=None, read_only=True)
    open_store(tmp_path).replace_files([parsed_file("a.py", ["one"])])

    reader = IndexStore.open(tmp_path, embedder_id="test-embedder", dimension=DIM, read_only=True)

    assert reader.search_fts("one", k=1)[0].path == "a.py"
    with pytest.raises(IndexStoreError, match="read-only"):
        reader.delete_files(["a.py"])
    with pytest.raises(IndexNotReady, match="embedder changed"):
        IndexStore.open(tmp_path, embedder_id="other", dimension=DIM, read_only=True)


def test_the_workspace_index_lives_in_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_LSP_CACHE_DIR", str(tmp_path / "cache"))
    workspace = tmp_path / "project"
    workspace.mkdir()

    store = IndexStore.for_workspace(workspace, embedder_id=None, dimension=None)

    assert store.directory.is_relative_to(tmp_path / "cache")
    assert (store.directory / "meta.json").is_file()
    assert list(workspace.iterdir()) == []


def test_an_embedder_needs_a_dimension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dimension"):
        IndexStore.open(tmp_path, embedder_id="model", dimension=None)


# ---------------------------------------------------------------- maintenance


def test_batched_writes_then_optimize_keep_fragments_bounded(store: IndexStore) -> None:
    for batch in range(20):
        store.replace_files([parsed_file(f"b{batch}/f{i}.py", ["x", "y"]) for i in range(5)])
    assert store.stats().fragments["chunks"] > maintenance_module.MAX_FRAGMENTS

    report = store.maybe_optimize()

    assert {"files", "symbols", "chunks", "references"} <= set(report.optimized)
    stats = store.stats()
    assert max(stats.fragments.values()) <= 2
    assert stats.chunks == 200 and stats.files == 100
    assert stats.disk_bytes > 0
    assert store.search_fts("b7 f3", k=1)[0].path == "b7/f3.py"
    assert store.maybe_optimize().optimized == ()  # nothing due any more


def test_cache_is_pruned_to_what_chunks_use(store: IndexStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance_module, "CACHE_PRUNE_MIN_ROWS", 5)
    store.replace_files([parsed_file("a.py", ["one"])])
    used = store.chunks_missing_vectors(1)[0]
    store.set_vectors({used.chunk_id: unit(0)})
    store.cache_vectors({f"old-{i}": unit(i) for i in range(10)})

    report = store.maybe_optimize()

    assert report.cache_pruned == 10
    assert set(store.cached_vectors([used.text_hash, "old-1"])) == {used.text_hash}


def test_a_write_that_fails_between_tables_removes_its_rows(
    store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.replace_files([parsed_file("kept.py", ["kept"]), parsed_file("changed.py", ["old"])])
    real_replace = store._replace

    def fail_before_files(name, key, data, paths):
        if name == "files":
            raise OSError("disk full")
        real_replace(name, key, data, paths)

    monkeypatch.setattr(store, "_replace", fail_before_files)
    with pytest.raises(OSError):
        store.replace_files([parsed_file("new.py", ["fresh"]), parsed_file("changed.py", ["new"], 1)])
    monkeypatch.undo()

    # Both files now look "not indexed", with no rows anywhere: the next sync redoes them.
    assert set(store.files()) == {"kept.py"}
    for path in ("new.py", "changed.py"):
        assert store.chunks(path) == [] and store.symbols(path=path) == []
        assert store.references(path=path) == []
    assert [c.symbol for c in store.chunks("kept.py")] == ["Module.kept"]
    assert not (store.directory / store_module.JOURNAL_FILE).exists()
    assert store.remove_orphans() == []


def test_opening_after_a_crash_removes_the_interrupted_files(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.replace_files([parsed_file("kept.py", ["kept"]), parsed_file("changed.py", ["old"])])
    # What a SIGKILL after the chunks commit of this batch leaves: its journal, new chunk rows for
    # both files, and the old files row of changed.py vouching for rows that are not there any more.
    interrupted = [parsed_file("new.py", ["fresh"]), parsed_file("changed.py", ["old"], 1)]
    (tmp_path / store_module.JOURNAL_FILE).write_text(json.dumps({"paths": ["new.py", "changed.py"]}))
    chunks = [chunk for item in interrupted for chunk in item.chunks]
    store._replace("chunks", "chunk_id", tables_module.chunk_table(chunks, {}, DIM), ["new.py", "changed.py"])

    reopened = open_store(tmp_path)

    assert reopened.rebuilt_reason is None
    assert reopened.recovered_paths == ["new.py", "changed.py"]
    assert set(reopened.files()) == {"kept.py"}
    assert reopened.chunks("new.py") == [] and reopened.chunks("changed.py") == []
    assert reopened.symbols(path="changed.py") == []
    assert not (tmp_path / store_module.JOURNAL_FILE).exists()
    assert open_store(tmp_path).recovered_paths == []


def test_remove_orphans_deletes_rows_without_a_file_row(store: IndexStore) -> None:
    store.replace_files([parsed_file("kept.py", ["kept"])])
    orphan = parsed_file("orphan.py", ["lost"])
    store._replace("chunks", "chunk_id", tables_module.chunk_table(orphan.chunks, {}, DIM), ["orphan.py"])
    store._replace("symbols", "id", tables_module.symbol_table([orphan]), ["orphan.py"])

    assert store.remove_orphans() == ["orphan.py"]
    assert store.chunks("orphan.py") == [] and store.symbols(path="orphan.py") == []
    assert [c.symbol for c in store.chunks("kept.py")] == ["Module.kept"]


# ----------------------------------------------------------------- crash safety

_WRITER = textwrap.dedent(
    """
    import itertools, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_store import open_store, parsed_file, unit
    store = open_store(Path({directory!r}))
    for version in itertools.count(1):
        batch = [parsed_file(f"pkg/m{{i}}.py", ["alpha", "beta", "gamma"][: 1 + (version + i) % 3], version)
                 for i in range(30)]
        store.replace_files(batch)
        pending = store.chunks_missing_vectors(20)
        store.set_vectors({{item.chunk_id: unit(n) for n, item in enumerate(pending)}})
        if version % 3 == 0:
            store.delete_files([f"pkg/m{{i}}.py" for i in range(0, 30, 7)])
        print("wrote", version, flush=True)
    """
)


def sync(store: IndexStore, wanted: list[ParsedFile]) -> None:
    """What the indexer does: remove leftovers, then redo whatever is stale or missing."""
    store.remove_orphans()
    indexed = store.files()
    by_path = {item.record.path: item for item in wanted}
    store.delete_files([path for path in indexed if path not in by_path])
    stale = [
        item
        for path, item in by_path.items()
        if path not in indexed or indexed[path].sha256 != item.record.sha256
    ]
    store.replace_files(stale)


@pytest.mark.parametrize("writes_before_kill", [2, 5])
def test_sigkill_mid_index_leaves_an_index_the_next_run_completes(
    tmp_path: Path, writes_before_kill: int
) -> None:
    directory = tmp_path / "index"
    script = _WRITER.format(tests=str(Path(__file__).parent), directory=str(directory))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for _ in range(writes_before_kill):
            assert child.stdout.readline().startswith("wrote"), "the writer died early"
        time.sleep(0.05 * writes_before_kill)  # land somewhere inside the next write
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    store = open_store(directory)
    assert store.rebuilt_reason is None
    # Before any sync: every file listed as indexed has exactly the rows of the version it records.
    for path, indexed in store.files().items():
        version = indexed.sha256.rsplit("-", 1)[1]
        texts = [chunk.text for chunk in store.chunks(path)]
        assert texts and all(f"revision {version}" in text for text in texts), path
    assert store.remove_orphans() == []
    ids = all_chunk_ids(store)
    assert len(ids) == len(set(ids))

    wanted = [parsed_file(f"pkg/m{i}.py", ["alpha", "beta"], 99) for i in range(30)]
    sync(store, wanted)

    expected_chunks = {chunk.chunk_id for item in wanted for chunk in item.chunks}
    ids = all_chunk_ids(store)
    assert len(ids) == len(set(ids)), "duplicate chunk rows"
    assert set(ids) == expected_chunks, "orphan or missing chunk rows"
    stats = store.stats()
    assert (stats.files, stats.symbols, stats.references) == (30, 60, 60)
    assert set(store.files()) == {item.record.path for item in wanted}
    cache_keys = store._select("embedding_cache", None, ["key"]).column("key").to_pylist()
    assert len(cache_keys) == len(set(cache_keys))


def test_file_descriptors_stay_bounded_over_many_index_refreshes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by bench/soak.py: each full-text index refresh left 4 more files open, without end.
    monkeypatch.setattr(store_module, "REOPEN_AFTER_S", 0.0)
    store = open_store(tmp_path / "index")
    wanted = [parsed_file(f"pkg/m{i}.py", ["alpha", "beta"], 0) for i in range(20)]
    store.replace_files(wanted)

    def refresh(revision: int) -> None:
        store.replace_files([parsed_file(f"pkg/m{revision % 20}.py", ["alpha", "gamma"], revision)])
        store.maybe_optimize(force=True)
        assert store.search_fts("gamma", k=3)

    refresh(1)
    before = len(os.listdir("/proc/self/fd"))
    for revision in range(2, 42):
        refresh(revision)
    assert len(os.listdir("/proc/self/fd")) <= before + 8
