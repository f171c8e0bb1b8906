"""Federation between real `swarm-lsp api` processes on loopback ports (docs/federation.md).

Three processes vote together from a manual peer list, and one is killed mid-vote; a real
`python -m llama_cpp.server` serves as an engine peer; mDNS and the beacon find peers between real
processes; unreachable, garbage-speaking, wrong-version and wrong-secret peers each get a clear
status while the vote goes on without them.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import waiting
from server_processes import READY_LINE, SWARM_LSP, ServerProcess, api_env, serving, write_workspace

from swarm_lsp.federation.protocol import sign

pytestmark = pytest.mark.slow

SECRET = "correct horse battery staple"
CHAT_TIMEOUT_S = 300.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def federated_env(home: Path, *, secret: str = SECRET, **settings: str) -> dict[str, str]:
    """An api_env with federation on, its own user config folder (and so its own peer list)."""
    home.mkdir(parents=True, exist_ok=True)
    values = {
        "FEDERATION__ENABLED": "true",
        "FEDERATION__SECRET": secret,
        "FEDERATION__MDNS": "false",
        "FEDERATION__BEACON": "false",
        "FEDERATION__HEALTH_INTERVAL": "0.5",
        "FEDERATION__OPEN_SECONDS": "2",
        "FEDERATION__INTERFACES": '["127.0.0.1"]',
        # Several "machines" share this one's cores: llama.cpp's threads spin while they wait for each
        # other, so two of them per process on two busy cores make every step crawl.
        "MODEL__THREADS": "1",
    }
    values.update(settings)
    env = api_env(home, **values)
    env["SWARM_LSP_CONFIG_FILE"] = str(home / "config.toml")
    return env


def write_peers(home: Path, peers: list[dict[str, Any]]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "peers.json").write_text(json.dumps(peers))


def start_api(root: Path, env: dict[str, str], port: int) -> contextlib.AbstractContextManager[ServerProcess]:
    return serving([SWARM_LSP, "api", "--workspace", str(root), "--port", str(port)], env, READY_LINE)


def peers_seen(url: str) -> dict[str, dict[str, Any]]:
    return {peer["url"]: peer for peer in httpx.get(f"{url}/api/peers", timeout=10).json()["peers"]}


def wait_until(what: str, condition: Callable[[], Any], timeout: float = 60.0, every: float = 0.25) -> Any:
    """`waiting.wait_until`, looking every 0.25 s by default: each look is an HTTP request to a server
    that may be busy voting."""
    return waiting.wait_until(what, condition, timeout=timeout, every=every)


def chat(url: str, text: str = "Say hello.", **extra: Any) -> dict[str, Any]:
    body = {"model": "swarm-plain", "messages": [{"role": "user", "content": text}], **extra}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=CHAT_TIMEOUT_S)
    assert response.status_code == 200, response.text
    return response.json()


def peer_requests_running(url: str) -> bool:
    try:
        records = httpx.get(f"{url}/api/requests", timeout=2).json()["requests"]
    except httpx.HTTPError:
        return False
    return any(record["door"] == "peer" and record["state"] == "running" for record in records)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return write_workspace(tmp_path / "workspace")


def test_three_processes_vote_together_and_survive_one_killed_mid_vote(
    workspace: Path, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in "abc"}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    write_peers(tmp_path / "a", [{"url": urls["b"]}, {"url": urls["c"]}])
    settings = {"SWARM__VOTERS": "6", "SWARM__MAX_TOKENS": "160"}
    envs = {name: federated_env(tmp_path / name, **settings) for name in "abc"}
    # a holds the vote and lends no voters of its own, so a vote always has voters on b or c to lose.
    envs["a"]["SWARM_LSP_FEDERATION__LOCAL_VOTERS"] = "false"
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(start_api(workspace, envs[name], ports[name])) for name in "abc"}
        a = urls["a"]
        wait_until("b and c up", lambda: all(peers_seen(a)[urls[n]]["status"] == "up" for n in "bc"))
        seen = peers_seen(a)[urls["b"]]
        assert seen["trust"] == "trusted" and seen["model"] and seen["latency_ms"] is not None
        assert SECRET not in httpx.get(f"{a}/api/peers").text and SECRET not in servers["a"].log

        together = chat(a)["swarm_lsp"]
        assert sum(together["placed"].values()) == 6 and "local" not in together["placed"], together["placed"]
        assert all(c["backend"].startswith("peer 127.0.0.1:") for c in together["candidates"])

        # A vote whose voters run on the peers; the first peer seen decoding is killed.
        answer: dict[str, Any] = {}
        question = "Count from one to one hundred, one number per line."
        asking = threading.Thread(target=lambda: answer.update(chat(a, question)))
        asking.start()
        victim = wait_until(
            "a peer decoding voters",
            lambda: next((n for n in "bc" if peer_requests_running(urls[n])), None),
            timeout=120,
            every=0.05,
        )
        servers[victim].process.send_signal(signal.SIGKILL)
        asking.join(CHAT_TIMEOUT_S)
        assert not asking.is_alive(), "the vote hung after a peer died"
        vote = answer["swarm_lsp"]
        lost = f"127.0.0.1:{ports[victim]}"
        assert vote["degraded"] and lost in vote["failed_nodes"], vote
        assert answer["choices"][0]["message"]["content"].strip()
        assert any("degraded" in note and lost in note for note in vote["notes"]), vote["notes"]
        wait_until("the killed peer marked down", lambda: peers_seen(a)[urls[victim]]["status"] == "down")

        # Restarted on its port, it is checked again (breaker half-open) and comes back.
        stack.enter_context(start_api(workspace, envs[victim], ports[victim]))
        wait_until("the restarted peer up again", lambda: peers_seen(a)[urls[victim]]["status"] == "up")


def test_two_machines_asking_each_other_at_once_both_answer_in_full(workspace: Path, tmp_path: Path) -> None:
    ports = {name: free_port() for name in "ab"}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    write_peers(tmp_path / "a", [{"url": urls["b"]}])
    write_peers(tmp_path / "b", [{"url": urls["a"]}])
    with contextlib.ExitStack() as stack:
        for name in "ab":
            # Neither lends its own model to its own votes: each vote must run on the other machine,
            # which is exactly when two machines waiting for each other could deadlock.
            env = federated_env(tmp_path / name, SWARM__VOTERS="4", FEDERATION__LOCAL_VOTERS="false")
            stack.enter_context(start_api(workspace, env, ports[name]))
        for name, other in (("a", "b"), ("b", "a")):
            wait_until(
                f"{name} sees {other}", lambda n=name, o=other: peers_seen(urls[n])[urls[o]]["status"] == "up"
            )
        answers: dict[str, dict[str, Any]] = {}
        askers = [threading.Thread(target=lambda n=name: answers.update({n: chat(urls[n])})) for name in "ab"]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(CHAT_TIMEOUT_S)
        # Each holds its own turn while its voters run on the other: neither may wait for the other's.
        for name, other in (("a", "b"), ("b", "a")):
            vote = answers[name]["swarm_lsp"]
            assert not vote["degraded"] and vote["finished_voters"] == 4, vote["notes"]
            assert vote["placed"].get(f"127.0.0.1:{ports[other]}", 0) >= 1, vote["placed"]


@contextlib.contextmanager
def llama_cpp_server(model: Path, api_key: str) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "2048", "--api_key", api_key, "--interrupt_requests", "False",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        headers = {"Authorization": f"Bearer {api_key}"}
        wait_until("llama_cpp.server", lambda: _answers(f"{base}/v1/models", headers), timeout=120)
        yield base
    finally:
        process.terminate()
        process.wait(15)


def _answers(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_llama_cpp_server_is_an_engine_peer_and_a_wrong_token_says_so(
    workspace: Path, tmp_path: Path, bundled_gguf: Path
) -> None:
    with llama_cpp_server(bundled_gguf, "engine-key") as engine:
        home = tmp_path / "a"
        write_peers(home, [{"url": engine, "token": "wrong-key"}])
        port = free_port()
        with start_api(workspace, federated_env(home, SWARM__VOTERS="4"), port) as server:
            refused = wait_until(
                "the wrong token reported", lambda: peers_seen(server.url)[engine]["problem"]
            )
            assert "token" in refused and peers_seen(server.url)[engine]["status"] == "down"
            assert "wrong-key" not in httpx.get(f"{server.url}/api/peers").text
            added = httpx.post(
                f"{server.url}/api/peers", json={"url": engine, "token": "engine-key", "kind": "auto"}
            )
            assert added.status_code == 200, added.text
            peer = wait_until(
                "the engine up", lambda: (p := peers_seen(server.url)[engine])["status"] == "up" and p
            )
            assert peer["kind"] == "engine" and peer["trust"] == "by configuration"
            vote = chat(server.url)["swarm_lsp"]
            assert vote["placed"].get(f"127.0.0.1:{engine.rsplit(':', 1)[1]}", 0) >= 1, vote["placed"]
            assert vote["finished_voters"] == 4 and not vote["degraded"], (vote["notes"], vote["placed"])


def test_mdns_finds_real_peers_and_only_the_one_with_the_secret_is_trusted(
    workspace: Path, tmp_path: Path
) -> None:
    mdns = {"FEDERATION__MDNS": "true"}
    envs = {
        "a": federated_env(tmp_path / "a", **mdns),
        "b": federated_env(tmp_path / "b", **mdns),
        "c": federated_env(tmp_path / "c", secret="another secret", **mdns),
    }
    ports = {name: free_port() for name in envs}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(start_api(workspace, envs[name], ports[name])) for name in envs}
        b, c = (f"http://127.0.0.1:{ports[n]}" for n in "bc")

        def statuses() -> dict[str, str] | None:
            seen = peers_seen(servers["a"].url)
            found = {url: peer["status"] for url, peer in seen.items()}
            return found if found.get(b) == "up" and found.get(c) == "seen, not trusted" else None

        seen = wait_until("b trusted and c seen", statuses, timeout=90)
        assert f"http://127.0.0.1:{ports['a']}" not in seen, "a process does not list itself"
        assert peers_seen(servers["a"].url)[b]["sources"] == ["mdns"]
        # c is shown but gets no voters.
        vote = chat(servers["a"].url)["swarm_lsp"]
        assert f"127.0.0.1:{ports['c']}" not in vote["placed"], vote["placed"]
        servers["b"].process.terminate()  # a clean exit unregisters
        servers["b"].process.wait(15)
        wait_until(
            "b gone", lambda: peers_seen(servers["a"].url)[b]["status"] in ("gone", "down"), timeout=30
        )


def test_the_beacon_finds_peers_with_mdns_off(workspace: Path, tmp_path: Path) -> None:
    beacon = {
        "FEDERATION__BEACON": "true",
        "FEDERATION__BEACON_PORT": str(free_port(socket.SOCK_DGRAM)),
        "FEDERATION__BEACON_ADDRESS": "127.255.255.255",
    }
    ports = {name: free_port() for name in "ab"}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                start_api(workspace, federated_env(tmp_path / name, **beacon), ports[name])
            )
            for name in "ab"
        }
        b = f"http://127.0.0.1:{ports['b']}"
        peer = wait_until(
            "b found by beacon", lambda: peers_seen(servers["a"].url).get(b, {}).get("status") == "up"
        )
        assert peer
        assert peers_seen(servers["a"].url)[b]["sources"] == ["beacon"]


class _Scripted(http.server.BaseHTTPRequestHandler):
    """A test double for a broken peer: answers every request with `body`."""

    body = b""

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return None


@contextlib.contextmanager
def scripted_peer(body: bytes) -> Iterator[str]:
    handler = type("Handler", (_Scripted,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_peers_get_a_clear_status_and_the_vote_goes_on_without_them(
    workspace: Path, tmp_path: Path
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    newer = json.dumps({"instance": "future", "protocol": 99, "model": "m"}).encode()
    with scripted_peer(b"<html>garbage</html>") as garbage, scripted_peer(newer) as future:
        home = tmp_path / "a"
        write_peers(home, [{"url": unreachable, "kind": "swarm"}, {"url": garbage}, {"url": future}])
        with start_api(workspace, federated_env(home), free_port()) as server:

            def settled() -> dict[str, dict[str, Any]] | None:
                seen = peers_seen(server.url)
                return (
                    seen
                    if all(seen.get(url, {}).get("problem") for url in (unreachable, garbage, future))
                    else None
                )

            seen = wait_until("every bad peer checked", settled)
            assert seen[unreachable]["status"] == "down" and "unreachable" in seen[unreachable]["problem"]
            assert seen[garbage]["status"] == "down" and "not JSON" in seen[garbage]["problem"]
            assert seen[future]["status"] == "incompatible" and "protocol 99" in seen[future]["problem"]
            # And requests to it that do not come from a peer holding the secret are refused.
            body = json.dumps({"n": 1, "samplings": [{}], "max_tokens": 8, "messages": []}).encode()
            unsigned = httpx.post(f"{server.url}/federation/v1/generate", content=body)
            assert unsigned.status_code == 401 and "only trusted peers" in unsigned.text
            forged = httpx.post(
                f"{server.url}/federation/v1/generate",
                content=body,
                headers={"X-Swarm-Signature": sign("a guess", "POST", "/federation/v1/generate", body)},
            )
            assert forged.status_code == 401 and "not signed with this federation's secret" in forged.text
            assert httpx.post(f"{server.url}/federation/v1/hello", json={"nonce": 1}).status_code == 400
            started = time.monotonic()
            vote = chat(server.url)["swarm_lsp"]
            assert vote["placed"] == {"local": 3} and not vote["degraded"]
            assert time.monotonic() - started < CHAT_TIMEOUT_S


def test_the_peers_command_adds_lists_and_removes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = federated_env(home)
    unreachable = f"127.0.0.1:{free_port()}"

    def peers(*args: str, enabled: bool = True) -> subprocess.CompletedProcess[str]:
        run_env = dict(env, SWARM_LSP_FEDERATION__ENABLED="true" if enabled else "false")
        return subprocess.run(
            [SWARM_LSP, "peers", *args], env=run_env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    added = peers("add", unreachable, "--kind", "swarm")
    assert added.returncode == 0 and f"http://{unreachable}" in added.stdout
    listed = peers("--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["peers"]
    assert row["status"] == "down" and "unreachable" in row["problem"]
    off = peers(enabled=False)
    assert "federation is off" in off.stdout and "not checked" in off.stdout
    bad = peers("add", "ftp://nowhere")
    assert bad.returncode == 1 and "not an http" in bad.stderr
    assert peers("remove", unreachable).returncode == 0
    missing = peers("remove", unreachable)
    assert missing.returncode == 1 and "not in the peer list" in missing.stderr
