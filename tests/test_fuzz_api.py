"""Fuzzing `swarm-lsp api`, the real process, with generated requests: bodies for every endpoint, and
headers (Host, Origin, Authorization, Content-Type) good and bad; then, on raw sockets, HTTP that no
client library would send (Content-Length that lies, huge and non-ASCII headers, broken chunking).

Properties:
- every well-formed HTTP request gets a response before the client's timeout; bad input is a 4xx
  whose JSON `error.message` says what is wrong, never a 500 (a 503 only for what this server
  cannot do: no model, no embedder);
- malformed HTTP is refused (a 4xx, or the connection closed) without a hang or a 5xx;
- the server stays up: the status page answers after every run.

The server runs with a token (so the token check is fuzzed too), one voter and 4 tokens per answer;
a generated chat request that is valid asks for at most 4 tokens from at most 2 voters.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fuzz_support import fuzz_settings, huge_strings, integers_at_the_edges, json_values
from fuzz_support import nasty_strings as nasty
from hypothesis import event, example, given
from hypothesis import strategies as st
from server_processes import ServerProcess, api_env, api_server, write_workspace

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token-0123456789"
TIMEOUT_S = 120.0
"""A request that takes longer is a hang (a valid chat waits for the model: 4 tokens, 1 voter)."""
LONG_TOKEN = "Bearer " + "x" * 5000
UNAVAILABLE = {"model_unavailable", "embedder_unavailable"}
"""The 503s this server may answer: what it cannot do here, said as such."""
ENDPOINTS = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/api/status"),
    ("GET", "/api/requests"),
    ("GET", "/api/tools"),
    ("GET", "/api/settings"),
    ("POST", "/api/settings"),
    ("GET", "/api/peers"),
    ("POST", "/api/peers"),
    ("DELETE", "/api/peers"),
    ("POST", "/federation/v1/hello"),
    ("POST", "/federation/v1/generate"),
    ("GET", "/"),
    ("GET", "/static/../../../etc/passwd"),
    ("GET", "/static/%2e%2e/%2e%2e/etc/passwd"),
    ("PUT", "/v1/chat/completions"),
    ("PATCH", "/api/settings"),
    ("GET", "/nothing/here"),
    ("OPTIONS", "/v1/models"),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("api-fuzz")
    root = write_workspace(tmp / "ws")
    env = api_env(tmp, swarm__voters="1", swarm__max_tokens="4")
    with api_server(root, env, "--token", TOKEN) as process:
        yield process


# ----------------------------------------------------------------------------------- strategies

SMALL_TOKENS = st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 32769, 10**12, "4", 2.5, None, True]))
SMALL_N = st.one_of(st.integers(1, 2), st.sampled_from([0, -3, 17, 10**9, "2", 1.0, None, False]))


def contents() -> st.SearchStrategy[Any]:
    part = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "", "input_audio"]), "text": nasty()}
    )
    return st.one_of(
        nasty(),
        st.sampled_from(["Say yes.", "What does greet do?", "", "   "]),
        huge_strings(300_000),
        st.lists(part, max_size=3),
        json_values(),
    )


def chat_bodies() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "user", "system", "assistant", "tool", "developer", "robot", ""])},
        optional={"content": contents(), "name": nasty()},
    )
    body = st.fixed_dictionaries(
        {
            "model": st.one_of(
                st.sampled_from(["swarm-plain", "swarm-plain", "swarm", "gpt-4o", ""]), nasty(), json_values()
            ),
            "messages": st.one_of(st.lists(message, min_size=1, max_size=3), json_values()),
            # Always small or invalid: a valid request asks for at most 4 tokens.
            "max_tokens": SMALL_TOKENS,
        },
        optional={
            "max_completion_tokens": SMALL_TOKENS,
            "n": SMALL_N,
            "temperature": st.one_of(st.floats(0, 2), json_values()),
            "stream": st.one_of(st.booleans(), json_values()),
            "stop": st.one_of(st.lists(nasty(5), max_size=6), nasty(), json_values()),
            "seed": st.one_of(integers_at_the_edges(), json_values()),
            "stream_options": json_values(),
            "logit_bias": json_values(),
        },
    )
    return st.one_of(body, body, json_values())


def bodies_for(path: str) -> st.SearchStrategy[Any]:
    if path == "/v1/chat/completions":
        return chat_bodies()
    if path == "/v1/embeddings":
        return st.one_of(
            st.fixed_dictionaries(
                {"model": nasty(), "input": st.one_of(nasty(), st.lists(nasty(), max_size=3), json_values())},
                optional={
                    "encoding_format": st.sampled_from(["float", "base64", "hex"]),
                    "dimensions": json_values(),
                },
            ),
            json_values(),
        )
    if path == "/api/settings":
        keys = st.sampled_from(["swarm.voters", "swarm.nope", "model.context_length", "", "a.b.c", "tools"])
        # Values a setting refuses (a valid change would reconfigure the server under the fuzzer).
        values = st.one_of(
            st.sampled_from(["-1", "zero", 10**12, "[1, 2]", "0"]), st.lists(nasty()), st.none()
        )
        return st.one_of(
            st.fixed_dictionaries({"key": st.one_of(keys, nasty())}, optional={"value": values}),
            json_values(),
        )
    if path == "/api/peers":
        url = st.one_of(st.sampled_from(["not a url", "ftp://x", "http://", "http://[::1", ""]), nasty())
        return st.one_of(
            st.fixed_dictionaries({"url": url}, optional={"token": json_values(), "kind": nasty()}),
            json_values(),
        )
    return st.one_of(st.none(), json_values())


@st.composite
def fuzzed_headers(draw: st.DrawFn) -> dict[str, str]:
    headers = {
        "Authorization": draw(
            st.sampled_from(
                [
                    f"Bearer {TOKEN}",
                    "",
                    "Bearer",
                    f"bearer {TOKEN}",
                    "Bearer wrong",
                    "Basic Zm9vOmJhcg==",
                    LONG_TOKEN,
                ]
            )
        ),
        "Content-Type": draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=latin-1",
                    "text/plain",
                    "",
                    "multipart/form-data",
                ]
            )
        ),
    }
    host = draw(
        st.sampled_from([None, "localhost", "attacker.example", "127.0.0.1:1", "[::1]", "", "a.nip.io"])
    )
    if host is not None:
        headers["Host"] = host
    origin = draw(
        st.sampled_from([None, "OWN", "http://attacker.example", "null", "file://", "http://127.0.0.1:1"])
    )
    if origin is not None:
        headers["Origin"] = origin
    if draw(st.booleans()):
        headers["Sec-Fetch-Site"] = draw(st.sampled_from(["cross-site", "same-site", "same-origin", "none"]))
    return headers


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method, path = draw(st.sampled_from(ENDPOINTS))
    body = draw(bodies_for(path))
    encoded = draw(
        st.one_of(
            st.just(None if body is None else json.dumps(body).encode()),
            st.sampled_from([b"{not json", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b"", b"null"]),
        )
    )
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if draw(st.integers(0, 2)) == 0:  # a third of the requests: headers a proxy or a browser might send
        headers = draw(fuzzed_headers())
    if method == "DELETE":
        path += draw(
            st.sampled_from(["", "?url=http://nowhere:1", "?url=", "?url=%00", "?url=" + "a" * 3000])
        )
    return {"method": method, "path": path, "content": encoded, "headers": headers}


# ---------------------------------------------------------------------------------------- checks


def send(server: ServerProcess, request: dict[str, Any]) -> httpx.Response:
    headers = {key: (server.url if value == "OWN" else value) for key, value in request["headers"].items()}
    return httpx.request(
        request["method"],
        server.url + request["path"],
        content=request["content"],
        headers=headers,
        timeout=TIMEOUT_S,
    )


def check(response: httpx.Response, request: dict[str, Any]) -> None:
    where = f"{request['method']} {request['path']}"
    event(f"{response.status_code}")
    assert response.status_code < 500 or response.status_code == 503, (
        f"{where}: {response.status_code} {response.text[:500]}"
    )
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"{where}: {response.text[:300]}"
    )
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"].strip(), f"{where}: {error}"
    if response.status_code == 503:
        assert error["code"] in UNAVAILABLE, f"{where}: a 503 for what this server can do: {error}"


def still_serving(server: ServerProcess) -> None:
    assert server.process.poll() is None, f"the server exited:\n{server.log[-3000:]}"
    status = httpx.get(f"{server.url}/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert status.status_code == 200, status.text[:300]


# ----------------------------------------------------------------------------------------- tests


@example(
    request={
        "method": "POST",
        "path": "/v1/chat/completions",
        "content": json.dumps(
            {"model": "swarm-plain", "messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 2}
        ).encode(),
        "headers": {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    }
)
@example(
    request={
        "method": "POST",
        "path": "/v1/chat/completions",
        "content": json.dumps(
            {"model": "\ud800", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        ).encode(),
        "headers": {"Authorization": f"Bearer {TOKEN}"},
    }
)
@example(
    request={
        "method": "POST",
        "path": "/v1/chat/completions",
        "content": json.dumps(
            {"model": "swarm-plain", "messages": [{"role": "user", "content": "say \ud800"}], "max_tokens": 2}
        ).encode(),
        "headers": {"Authorization": f"Bearer {TOKEN}"},
    }
)
@given(request=requests())
@fuzz_settings(300)
def test_every_request_gets_a_response_that_says_what_is_wrong(server: ServerProcess, request) -> None:
    check(send(server, request), request)
    still_serving(server)


# ------------------------------------------------------------------------------- raw HTTP on a socket


def raw_exchange(server: ServerProcess, data: bytes, timeout: float = 30.0) -> bytes:
    """Send `data`, close our side, read until the server closes (or the timeout: a hang)."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server closed first (it refused the headers): what did it say?
            pass
        received = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"no answer within {timeout:.0f}s to {data[:200]!r}") from None
            if not chunk:
                break
            received += chunk
    return received


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method, path = draw(st.sampled_from(ENDPOINTS))
    body = draw(st.one_of(st.just(b'{"model": "swarm-plain", "messages": []}'), st.binary(max_size=300)))
    length = draw(
        st.sampled_from(
            ["exact", "shorter", "longer", "nonsense", "negative", "twice", "none", "chunked-bad"]
        )
    )
    lines = [
        f"{method} {path} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        f"Authorization: Bearer {TOKEN}".encode(),
    ]
    lines += draw(
        st.lists(
            st.sampled_from(
                [
                    b"X-Huge: " + b"a" * 100_000,
                    b"X-Latin: caf\xe9",
                    b"X-Utf8: \xf0\x9f\x98\x80",
                    b"X-Ctl: a\x01b",
                    b"Bad Header Name: x",
                    b": no name",
                    b"Origin: http://attacker.example",
                    b"Host: attacker.example",
                    b"Content-Type: application/json",
                    *(f"X-Many-{n}: {n}".encode() for n in range(3)),
                ]
            ),
            max_size=4,
        )
    )
    if draw(st.booleans()):
        lines += [f"X-Filler-{n}: {n}".encode() for n in range(draw(st.integers(50, 2000)))]
    declared = {"exact": len(body), "shorter": max(len(body) - 5, 0), "longer": len(body) + 50}.get(length)
    if declared is not None:
        lines.append(f"Content-Length: {declared}".encode())
    elif length == "nonsense":
        lines.append(b"Content-Length: twelve")
    elif length == "negative":
        lines.append(b"Content-Length: -5")
    elif length == "twice":
        lines += [f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(body) + 1}".encode()]
    elif length == "chunked-bad":
        lines.append(b"Transfer-Encoding: chunked")
        body = b"zz\r\n" + body + b"\r\n0\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@example(
    data=b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\n\r\n"
)
@example(data=b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{}")
@example(data=b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-that-looks-like-tls")
@given(data=st.one_of(raw_requests(), st.binary(max_size=500)))
@fuzz_settings(250)
def test_malformed_http_is_refused_without_a_hang_or_a_5xx(server: ServerProcess, data: bytes) -> None:
    answer = raw_exchange(server, data)
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 "), f"not an HTTP answer: {answer[:200]!r}"
        status = int(status_line.split()[1])
        event(str(status))
        assert status < 500, f"{status} for {data[:200]!r}: {answer[:500]!r}"
    else:
        event("closed without an answer")
    still_serving(server)
