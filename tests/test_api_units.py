"""The parts behind the HTTP API, without a server: the request queue, the activity record, settings
edits, the Host/Origin/token guard, and OpenAI messages read as a chat task."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from swarm_lsp.api.chat import task_for
from swarm_lsp.api.errors import ApiError
from swarm_lsp.api.schema import ChatMessage, ChatRequest, parse
from swarm_lsp.api.security import Guard, allowed_hosts
from swarm_lsp.config import load_settings
from swarm_lsp.config_edit import SettingRefused, describe_settings, set_workspace_setting
from swarm_lsp.swarm.activity import Activity
from swarm_lsp.swarm.engine import SwarmProgress
from swarm_lsp.swarm.prompts import PLAIN_SYSTEM, build_messages
from swarm_lsp.swarm.queue import QueueFull, RequestQueue

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# ------------------------------------------------------------------------------------------- queue
# `await asyncio.sleep(0)` below is one turn of the event loop, not a wait for time to pass: the task
# just created runs up to its first await (taking its turn, or its place in the line).


async def test_the_queue_serves_requests_in_arrival_order():
    queue = RequestQueue(limit=8)
    order: list[int] = []
    release = asyncio.Event()

    async def request(number: int) -> None:
        async with queue.turn():
            order.append(number)
            if number == 0:
                await release.wait()

    tasks = [asyncio.create_task(request(0))]
    await asyncio.sleep(0)
    for number in range(1, 6):
        tasks.append(asyncio.create_task(request(number)))
        await asyncio.sleep(0)
    assert queue.running == 1 and queue.waiting == 5
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]
    assert queue.running == 0 and queue.waiting == 0


async def test_a_full_queue_refuses_at_once_and_says_when_to_retry():
    queue = RequestQueue(limit=1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with queue.turn():
            await hold.wait()

    first = asyncio.create_task(holder())
    second = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as refused:
        async with queue.turn():
            pass
    assert refused.value.retry_after_s >= 1 and "limit is 1" in str(refused.value)
    hold.set()
    await asyncio.gather(first, second)
    async with queue.turn():  # free again
        assert queue.running == 1


async def test_a_cancelled_waiter_gives_its_place_up():
    queue = RequestQueue(limit=4)
    hold = asyncio.Event()
    served: list[str] = []

    async def request(name: str, wait: bool = False) -> None:
        async with queue.turn():
            served.append(name)
            if wait:
                await hold.wait()

    first = asyncio.create_task(request("first", wait=True))
    await asyncio.sleep(0)
    impatient = asyncio.create_task(request("impatient"))
    patient = asyncio.create_task(request("patient"))
    await asyncio.sleep(0)
    impatient.cancel()
    await asyncio.sleep(0)
    assert queue.waiting == 1
    hold.set()
    await asyncio.gather(first, patient)
    assert served == ["first", "patient"] and queue.running == 0


# ---------------------------------------------------------------------------------------- activity


def test_activity_records_progress_and_the_vote_and_tells_subscribers():
    activity = Activity()
    seen: list[dict] = []
    unsubscribe = activity.subscribe(seen.append)
    record = activity.begin(
        door="api",
        kind="chat",
        model="swarm",
        prompt="key sk-abcdefghijklmnopqrstuv please",
        voters=2,
        max_tokens=10,
    )
    activity.started(record, [0.0, 0.7])
    activity.progress(record, SwarmProgress("generating", 2, 0, 5, "", (3, 2), 10, 0.5))
    middle = activity.snapshot()[0]
    assert middle["state"] == "running" and [w["temperature"] for w in middle["workers"]] == [0.0, 0.7]
    assert [w["progress"] for w in middle["workers"]] == [0.3, 0.2]
    assert middle["workers"][0]["tokens_per_s"] == 6.0
    assert "sk-abc" not in middle["prompt"]  # redacted as in the audit log
    candidates = [
        {"index": i, "text": f"answer {i}", "score": 0.5, "votes": 1, "valid": True, "invalid_reason": "",
         "finish_reason": "stop", "temperature": 0.0, "completion_tokens": 4}
        for i in range(2)
    ]  # fmt: skip
    activity.finished(record, {"agreement": 0.9, "strategy": "medoid", "winner": 1, "sources": ["a.py:1-2"],
                               "candidates": candidates})  # fmt: skip
    unsubscribe()
    activity.failed(
        activity.begin(door="lsp", kind="ask", model="swarm", prompt="q", voters=1, max_tokens=5), "x"
    )
    done = activity.snapshot()[1]
    assert done["state"] == "done" and done["result"]["agreement"] == 0.9
    assert [c["winner"] for c in done["result"]["candidates"]] == [False, True]
    assert all(w["state"] == "done" and w["progress"] == 1.0 for w in done["workers"])
    # The progress update came within UPDATE_INTERVAL_S of the start: it waited (the snapshot has it).
    assert [event["state"] for event in seen] == ["queued", "running", "done"]
    assert activity.snapshot()[0]["state"] == "failed"


# ---------------------------------------------------------------------------------------- settings


def test_a_valid_setting_is_written_keeping_comments(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_LSP_CONFIG_FILE", str(tmp_path / "none.toml"))
    config = tmp_path / ".swarm-lsp.toml"
    config.write_text("# my settings\n[swarm]\ntemperature = 0.5 # warm\n")
    written = set_workspace_setting(tmp_path, "swarm.voters", "7")
    text = config.read_text()
    assert "# my settings" in text and "# warm" in text
    assert tomllib.loads(text)["swarm"] == {"temperature": 0.5, "voters": 7}
    assert written.value == 7 and written.applies == "now" and written.warning is None
    assert set_workspace_setting(tmp_path, "index.exclude", '["build/*"]').applies == "restart"
    assert load_settings(tmp_path).settings.index.exclude == ["build/*"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("swarm.voters", "1000", "swarm.voters = 1000 is invalid"),
        ("swarm.strategy", "coin-flip", "allowed: one of auto"),
        ("swarm.nonsense", "1", "unknown setting 'swarm.nonsense'"),
        ("remote.api_key", "sk-123", "is a secret"),
    ],
)
def test_an_invalid_setting_is_refused_and_nothing_is_written(tmp_path, monkeypatch, key, value, message):
    monkeypatch.setenv("SWARM_LSP_CONFIG_FILE", str(tmp_path / "none.toml"))
    config = tmp_path / ".swarm-lsp.toml"
    config.write_text("[swarm]\nvoters = 3\n")
    before = config.read_bytes()
    with pytest.raises(SettingRefused, match=message):
        set_workspace_setting(tmp_path, key, value)
    assert config.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [".swarm-lsp.toml"]  # no temporary file left


def test_an_invalid_value_is_refused_even_when_the_environment_overrides_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_LSP_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SWARM_LSP_SWARM__VOTERS", "3")
    with pytest.raises(SettingRefused):
        set_workspace_setting(tmp_path, "swarm.voters", "1000")
    assert not (tmp_path / ".swarm-lsp.toml").exists()
    written = set_workspace_setting(tmp_path, "swarm.voters", "5")
    assert written.value == 3 and "SWARM_LSP_SWARM__VOTERS" in written.warning


def test_the_settings_view_says_where_values_come_from_and_hides_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_LSP_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SWARM_LSP_REMOTE__API_KEY", "sk-live-0123456789abcdef")
    (tmp_path / ".swarm-lsp.toml").write_text("[swarm]\nvoters = 2\n")
    rows = {row["key"]: row for row in describe_settings(load_settings(tmp_path))}
    assert rows["swarm.voters"]["source"].endswith(".swarm-lsp.toml") and rows["swarm.voters"]["value"] == 2
    assert rows["swarm.temperature"]["source"] == "default"
    assert rows["remote.api_key"]["value"] == "[redacted]" and not rows["remote.api_key"]["editable"]
    assert "sk-live" not in repr(rows)
    del os.environ["SWARM_LSP_REMOTE__API_KEY"]


# ------------------------------------------------------------------------------------------- guard


def _scope(method: str = "GET", path: str = "/api/status", **headers: str) -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def test_the_guard_checks_host_origin_and_token():
    guard = Guard(None, hosts=allowed_hosts("127.0.0.1"), port=17615, token="tok")
    ok = {"host": "127.0.0.1:17615", "authorization": "Bearer tok"}
    assert guard.refusal(_scope(**ok)) is None
    assert guard.refusal(_scope(**{**ok, "host": "localhost:17615"})) is None
    assert guard.refusal(_scope(**{**ok, "host": "rebound.example:17615"}))[0] == 403
    assert guard.refusal(_scope(**{**ok, "origin": "http://127.0.0.1:17615"})) is None
    assert guard.refusal(_scope(**{**ok, "origin": "http://127.0.0.1:9999"}))[0] == 403
    assert guard.refusal(_scope(**{**ok, "origin": "null"}))[0] == 403
    cross = {**ok, "sec_fetch_site": "cross-site"}
    assert guard.refusal(_scope("POST", "/api/settings", **cross))[0] == 403
    assert guard.refusal(_scope(host="127.0.0.1:17615"))[0] == 401
    assert guard.refusal(_scope(**{"host": "127.0.0.1:17615", "authorization": "Bearer nope"}))[0] == 401
    assert guard.refusal(_scope(path="/", host="127.0.0.1:17615")) is None  # the page asks for the token
    assert guard.refusal(_scope(path="/static/app.js", host="127.0.0.1:17615")) is None


def test_a_wildcard_bind_allows_this_machine_s_names():
    hosts = allowed_hosts("0.0.0.0", ["dev.example"])
    assert {"127.0.0.1", "localhost", "dev.example"} <= hosts and "0.0.0.0" not in hosts
    assert "[::1]" not in hosts and "::1" in hosts


# ---------------------------------------------------------------------------------------- messages


def test_openai_messages_become_a_chat_task():
    request: ChatRequest = parse(
        ChatRequest,
        {
            "model": "swarm",
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "user", "content": "What is greet?"},
            ],
        },
    )
    task = task_for(request.messages, grounded=False)
    assert task.kind == "chat" and task.prompt == "What is greet?" and not task.grounded
    assert [(m.role, m.content) for m in task.history] == [("user", "Hello"), ("assistant", "Bonjour")]
    messages = build_messages(task, context="ignored for plain chat")
    assert messages[0].content == "Answer in French." and messages[-1].content.endswith("What is greet?")
    grounded = build_messages(task_for(request.messages, grounded=True), context="--- a.py:1-2\nx = 1")
    assert "a.py:1-2" in grounded[0].content and grounded[0].content.endswith("Answer in French.")
    plain = task_for([ChatMessage(role="user", content="hi")], grounded=False)
    assert build_messages(plain, "")[0].content == PLAIN_SYSTEM


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0]",
        ),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "messages[1].role"),
        ([{"role": "system", "content": "only instructions"}], "messages"),
    ],
)
def test_messages_this_server_cannot_read_are_refused(messages, param):
    request = parse(ChatRequest, {"model": "swarm", "messages": messages})
    with pytest.raises(ApiError) as refused:
        task_for(request.messages, grounded=True)
    assert refused.value.status == 400 and refused.value.param == param
