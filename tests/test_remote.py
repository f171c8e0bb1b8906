"""RemoteBackend against a real llama_cpp.server serving the bundled SmolLM2 model."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from swarm_lsp.basics import CancellationToken
from swarm_lsp.models.base import (
    GREEDY,
    Backend,
    BackendUnavailable,
    GenerationRequest,
    GenerationTimeout,
    Message,
    ModelNotFound,
    Sampling,
)
from swarm_lsp.models.remote.backend import RemoteBackend
from swarm_lsp.models.remote.http import RemoteError, error_message_in, normalise_base_url

pytestmark = pytest.mark.slow

MODEL_ALIAS = "smollm2"
API_KEY = "test-key"
STARTUP_TIMEOUT_S = 90.0
STORY = [Message("user", "Write a long story about a dragon who learns to bake bread.")]
QUESTION = [Message("user", "What is the capital of France? Answer in one sentence.")]


@dataclass(frozen=True)
class Server:
    url: str  # base URL with /v1
    port: int
    process: subprocess.Popen[bytes] | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_server(model: Path, *extra_args: str, port: int | None = None) -> Iterator[Server]:
    """Run `python -m llama_cpp.server` (on `port`, else a free one) until the block ends; the
    process never outlives it."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        # By default the server ends a running stream as soon as another request arrives,
        # which would cut short all but the last of our parallel requests.
        "--interrupt_requests",
        "False",
        *extra_args,
    ]
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            headers = {"Authorization": f"Bearer {API_KEY}"} if "--api_key" in extra_args else {}
            _wait_until_ready(process, port, log_file, headers)
            yield Server(url=f"http://127.0.0.1:{port}/v1", port=port, process=process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(
    process: subprocess.Popen[bytes], port: int, log_file: IO[bytes], headers: dict[str, str]
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
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
def server(bundled_gguf: Path) -> Iterator[Server]:
    with llama_server(bundled_gguf) as running:
        yield running


@pytest.fixture
async def backend(server: Server) -> AsyncIterator[RemoteBackend]:
    remote = RemoteBackend(server.url, MODEL_ALIAS)
    yield remote
    await remote.aclose()


def request(messages: list[Message] = QUESTION, **options) -> GenerationRequest:
    options.setdefault("max_tokens", 24)
    options.setdefault("sampling", GREEDY)
    return GenerationRequest(messages=messages, **options)


class Pieces:
    """Collects on_token calls per candidate index."""

    def __init__(self) -> None:
        self.by_index: dict[int, list[str]] = {}

    def __call__(self, index: int, text: str) -> None:
        self.by_index.setdefault(index, []).append(text)

    def text(self, index: int) -> str:
        return "".join(self.by_index.get(index, []))


# -- no server needed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("http://host:11434/v1/chat/completions", "http://host:11434/v1"),
        ("https://example.com/api/openai/v1", "https://example.com/api/openai/v1"),
    ],
)
def test_base_url_is_normalised(given: str, expected: str) -> None:
    assert normalise_base_url(given) == expected


def test_error_bodies_in_the_shapes_servers_use() -> None:
    assert error_message_in({"error": {"message": "boom", "code": "x"}}) == ("boom", "x")
    assert error_message_in({"detail": "Invalid API key"}) == ("Invalid API key", None)
    assert error_message_in({"error": "model 'x' not found"}) == ("model 'x' not found", None)


async def test_connection_refused_is_explained_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="swarm_lsp.models.remote")
    port = free_port()  # bound and released: nothing listens there
    async with RemoteBackend(f"http://127.0.0.1:{port}", "any", retries=2, retry_backoff_s=0.01) as remote:
        with pytest.raises(BackendUnavailable) as raised:
            await remote.generate(request())
    message = str(raised.value)
    assert f"could not connect to http://127.0.0.1:{port}/v1" in message
    assert "is the server running?" in message
    assert "tried 3 times" in message
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2


# -- against llama_cpp.server ----------------------------------------------------------------------


async def test_one_candidate_streams_the_pieces_of_its_text(backend: RemoteBackend) -> None:
    assert isinstance(backend, Backend)
    pieces = Pieces()
    [candidate] = await backend.generate(request(on_token=pieces))
    assert candidate.text.strip()
    assert pieces.text(0) == candidate.text
    assert len(pieces.by_index[0]) > 1
    assert candidate.finish_reason in ("stop", "length")
    assert candidate.index == 0
    assert 0 < candidate.completion_tokens <= 24
    assert candidate.backend == "remote"
    info = backend.info
    assert (info.backend, info.model, info.max_parallel) == ("remote", MODEL_ALIAS, 4)
    assert info.detail == backend.base_url


async def test_unset_model_takes_the_first_listed_and_base_url_gains_v1(server: Server) -> None:
    async with RemoteBackend(f"http://127.0.0.1:{server.port}") as remote:
        assert remote.base_url == server.url
        assert await remote.list_models() == [MODEL_ALIAS]
        [candidate] = await remote.generate(request(max_tokens=4))
        assert candidate.text
        assert remote.info.model == MODEL_ALIAS
        assert remote.info.context_length == 0  # llama_cpp.server does not report it


async def test_n_candidates_fall_back_to_parallel_requests_when_n_is_ignored(
    backend: RemoteBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="swarm_lsp.models.remote")
    pieces = Pieces()
    sampling = Sampling(temperature=0.9, top_p=0.95, seed=7)
    candidates = await backend.generate(
        request(STORY, n=3, sampling=sampling, max_tokens=16, on_token=pieces)
    )
    assert [c.index for c in candidates] == [0, 1, 2]
    assert [c.sampling.seed for c in candidates] == [7, 8, 9]
    for candidate in candidates:
        assert candidate.finish_reason in ("stop", "length")
        assert candidate.text and pieces.text(candidate.index) == candidate.text
    assert backend.server_honours_n is False

    # The second request knows better and goes straight to parallel requests.
    again = await backend.generate(request(STORY, n=2, sampling=sampling, max_tokens=8))
    assert len(again) == 2 and all(c.text for c in again)
    assert sum("ignores n" in r.getMessage() for r in caplog.records) == 1


async def test_different_samplings_go_to_their_own_candidates(backend: RemoteBackend) -> None:
    [greedy] = await backend.generate(request(max_tokens=16))
    samplings = [Sampling(temperature=1.0, seed=3), GREEDY]
    candidates = await backend.generate(request(n=2, sampling=samplings, max_tokens=16))
    assert candidates[1].text == greedy.text
    assert candidates[1].sampling == GREEDY


async def test_greedy_twice_gives_the_same_text(backend: RemoteBackend) -> None:
    [first] = await backend.generate(request(STORY, max_tokens=32))
    [second] = await backend.generate(request(STORY, max_tokens=32))
    assert first.text == second.text


async def test_stop_string_ends_the_text_before_it(backend: RemoteBackend) -> None:
    [full] = await backend.generate(request(STORY, max_tokens=32))
    words = full.text.split()
    assert len(words) > 4, full.text
    stop = " " + words[3]
    expected = full.text[: full.text.index(stop)]

    [stopped] = await backend.generate(request(STORY, max_tokens=32, stop=[stop]))
    assert stopped.text == expected
    assert stopped.finish_reason == "stop"


async def test_max_tokens_ends_with_length(backend: RemoteBackend) -> None:
    [candidate] = await backend.generate(request(STORY, max_tokens=5))
    assert candidate.finish_reason == "length"
    assert 0 < candidate.completion_tokens <= 5


async def test_server_accepts_any_model_name_so_the_backend_checks_the_list(server: Server) -> None:
    # What llama_cpp.server really does: an unknown name is answered by the loaded model.
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{server.url}/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200

    async with RemoteBackend(server.url, "no-such-model") as remote:
        with pytest.raises(ModelNotFound) as raised:
            await remote.generate(request())
    message = str(raised.value)
    assert "'no-such-model'" in message
    assert f"it offers: {MODEL_ALIAS}" in message


async def test_prompt_over_the_context_window_is_an_error_that_says_so(backend: RemoteBackend) -> None:
    # llama_cpp.server starts the event stream, then ends it without a word when the prompt is too long.
    too_long = [Message("user", "word " * 3000)]
    with pytest.raises(RemoteError, match="context window"):
        await backend.generate(request(too_long))


async def test_cancel_token_stops_the_stream(backend: RemoteBackend) -> None:
    token = CancellationToken()
    pieces = Pieces()

    def cancel_after_three(index: int, text: str) -> None:
        pieces(index, text)
        if len(pieces.by_index[index]) == 3:
            token.cancel()

    [candidate] = await backend.generate(
        request(STORY, max_tokens=48, on_token=cancel_after_three, cancel=token)
    )
    assert candidate.finish_reason == "cancelled"
    assert candidate.text == pieces.text(0)
    assert 3 <= candidate.completion_tokens < 48

    # The server let go of the abandoned stream and answers the next request in full.
    [after] = await backend.generate(request(max_tokens=8))
    assert after.finish_reason in ("stop", "length")


async def test_task_cancellation_raises_and_closes_the_stream(backend: RemoteBackend) -> None:
    first_piece = asyncio.Event()
    generation = asyncio.create_task(
        backend.generate(request(STORY, max_tokens=48, on_token=lambda index, text: first_piece.set()))
    )
    await asyncio.wait_for(first_piece.wait(), timeout=60)
    generation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await generation

    [after] = await backend.generate(request(max_tokens=8))
    assert after.finish_reason in ("stop", "length")


async def test_timeout_raises_with_the_partial_candidates(backend: RemoteBackend) -> None:
    with pytest.raises(GenerationTimeout) as raised:
        await backend.generate(request(STORY, n=2, max_tokens=48, timeout=0.1))
    partial = raised.value.partial
    assert [c.index for c in partial] == [0, 1]
    assert all(c.finish_reason == "timeout" for c in partial)


# -- a server that wants an API key ----------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_server(bundled_gguf: Path) -> Iterator[Server]:
    with llama_server(bundled_gguf, "--api_key", API_KEY) as running:
        yield running


@pytest.mark.parametrize(
    ("api_key", "hint"), [(None, "set the remote backend's api_key"), ("wrong", "check it")]
)
async def test_missing_or_wrong_api_key_is_explained(
    locked_server: Server, api_key: str | None, hint: str
) -> None:
    async with RemoteBackend(locked_server.url, MODEL_ALIAS, api_key=api_key) as remote:
        with pytest.raises(BackendUnavailable) as raised:
            await remote.generate(request())
    assert "401" in str(raised.value)
    assert hint in str(raised.value)


async def test_the_right_api_key_is_sent_as_a_bearer_token(locked_server: Server) -> None:
    async with RemoteBackend(locked_server.url, MODEL_ALIAS, api_key=API_KEY) as remote:
        [candidate] = await remote.generate(request(max_tokens=4))
    assert candidate.text
