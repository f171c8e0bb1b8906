"""A model backend that dies mid-generation: `python -m llama_cpp.server` SIGKILLed while it writes,
under the remote backend directly and under a real `swarm-lsp api` that votes with it. The request
ends with an error that says what happened, nothing hangs, and once the server is back on its port
the next request works without restarting anything."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from server_processes import api_env, api_server, write_workspace
from test_remote import MODEL_ALIAS, QUESTION, STORY, free_port, llama_server, request

from swarm_lsp.models.base import BackendUnavailable
from swarm_lsp.models.remote.backend import RemoteBackend
from swarm_lsp.models.remote.http import RemoteError

pytestmark = pytest.mark.slow


async def test_the_remote_backend_killed_mid_generation_fails_clearly_and_then_recovers(
    bundled_gguf: Path,
) -> None:
    port = free_port()
    with llama_server(bundled_gguf, port=port) as server:
        backend = RemoteBackend(server.url, MODEL_ALIAS, retries=0)
        writing = asyncio.Event()
        generation = asyncio.create_task(
            backend.generate(request(STORY, max_tokens=400, on_token=lambda index, text: writing.set()))
        )
        await asyncio.wait_for(writing.wait(), timeout=60)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        with pytest.raises((BackendUnavailable, RemoteError)) as raised:
            await asyncio.wait_for(generation, timeout=60)
        message = str(raised.value)
        assert server.url.removesuffix("/v1") in message or "127.0.0.1" in message, message

        with pytest.raises((BackendUnavailable, RemoteError)):  # still down: refused, said so, no hang
            await asyncio.wait_for(backend.generate(request(max_tokens=8)), timeout=60)
    with llama_server(bundled_gguf, port=port):
        [after] = await backend.generate(request(QUESTION, max_tokens=8))
        assert after.text.strip() and after.finish_reason in ("stop", "length")
    await backend.aclose()


def test_a_vote_whose_engine_dies_answers_with_an_error_and_the_next_vote_works(
    bundled_gguf: Path, tmp_path: Path
) -> None:
    port = free_port()
    root = write_workspace(tmp_path / "ws")
    env = api_env(
        tmp_path,
        model__backend="remote",
        remote__base_url=f"http://127.0.0.1:{port}/v1",
        remote__model=MODEL_ALIAS,
        remote__retries="0",
        swarm__max_tokens="300",
    )
    question = [{"role": "user", "content": "Write a long story about a dragon who bakes bread."}]
    with llama_server(bundled_gguf, port=port) as engine, api_server(root, env) as api:
        assert engine.process is not None
        lines = []
        with httpx.stream(
            "POST",
            f"{api.url}/v1/chat/completions",
            json={"model": "swarm-plain", "messages": question, "stream": True},
            timeout=120,
        ) as response:
            assert response.status_code == 200
            killed = False
            for line in response.iter_lines():
                if not line:
                    continue
                lines.append(line)
                if (
                    not killed
                    and line.startswith(": swarm-lsp progress")
                    and json.loads(line.split(" ", 3)[3])["tokens"]
                ):
                    engine.process.send_signal(signal.SIGKILL)  # the voters are writing: kill their engine
                    killed = True
        assert killed, lines
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert lines[-1] == "data: [DONE]"
        final = events[-1]
        print("final event:", json.dumps(final)[:600])
        if "error" in final:  # the vote could not finish: the error names the engine that went away
            assert "127.0.0.1" in final["error"]["message"] or "engine" in final["error"]["message"], final
        else:  # or it finished degraded, with what the voters wrote before the engine died
            assert final["swarm_lsp"]["degraded"], final

        with llama_server(bundled_gguf, port=port):
            answer = httpx.post(
                f"{api.url}/v1/chat/completions",
                json={"model": "swarm-plain", "messages": QUESTION_JSON, "max_tokens": 8},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"].strip()


QUESTION_JSON = [{"role": message.role, "content": message.content} for message in QUESTION]
