"""Who may talk to the API: the bearer token, and Host and Origin checks against DNS rebinding.

- Token: when the server has one (required for any bind address but loopback), every request
  carries `Authorization: Bearer <token>`, else 401. The page and its static files are served
  without it (they hold no data; the page asks for the token).
- Host: a request's Host must name this server (a loopback name, the bind address, or a name given
  with --allow-host), else 403: a web page that rebinds its own domain to 127.0.0.1 still sends
  its own domain as Host.
- Origin: a browser request from another site (an Origin that is not this server) is refused, and
  a write (POST, PUT, PATCH, DELETE) must come from this server's own page: with a foreign Origin,
  or none but `Sec-Fetch-Site: cross-site`, it is refused. Clients that are not browsers send no
  Origin and pass.
"""

from __future__ import annotations

import hmac
import json
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from swarm_lsp.sockets import WILDCARD_ADDRESSES

PUBLIC_PATHS = ("/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
PEER_PREFIX = "/federation/"
"""The peer protocol: the hello proves the federation secret, generate requests are signed with it;
neither carries the bearer token (peers do not know it)."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names a request may use: loopback names, the bind address (on a wildcard address, this
    machine's name and addresses), and `extra`."""
    names = {"localhost", "127.0.0.1", "::1", *(name.lower() for name in extra)}
    host = bind_host.strip("[]").lower()
    if host in WILDCARD_ADDRESSES:
        names.update(_own_names())
    else:
        names.add(host)
    return frozenset(names)


def _own_names() -> set[str]:
    import psutil

    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                names.add(address.address.split("%")[0].lower())
    return names


def _host_of(value: str) -> str:
    """The host name of a Host header (`name:port`, `[::1]:port`)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware applying the rules above to every HTTP request."""

    def __init__(self, app: Any, *, hosts: frozenset[str], port: int, token: str | None) -> None:
        self.app = app
        self.hosts = hosts
        self.port = port
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, code = refusal
        body = json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "permission_error" if status == 403 else "authentication_error",
                    "param": None,
                    "code": code,
                }
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="swarm-lsp"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: dict[str, Any]) -> tuple[int, str, str] | None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = _host_of(headers.get("host", ""))
        if host not in self.hosts:
            return (
                403,
                (
                    f"Host '{host}' is not this server; use http://127.0.0.1:{self.port} (or start "
                    "swarm-lsp api with --allow-host NAME)"
                ),
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and not self._same_origin(origin):
            return 403, f"requests from the web page at {origin} are refused", "origin_not_allowed"
        if (
            scope["method"] in WRITE_METHODS
            and origin is None
            and headers.get("sec-fetch-site") in ("cross-site", "same-site")
        ):
            return 403, "cross-site writes are refused", "origin_not_allowed"
        path = scope["path"]
        public = scope["method"] == "GET" and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))
        public = public or (scope["method"] == "POST" and path.startswith(PEER_PREFIX))
        if self._expected is not None and not public:
            given = headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, self._expected):
                return 401, "send Authorization: Bearer <the server's token> (--token)", "invalid_api_key"
        return None

    def _same_origin(self, origin: str) -> bool:
        parsed = urlparse(origin)
        if parsed.scheme not in ("http", "https") or parsed.hostname is None:
            return False
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return parsed.hostname.lower() in self.hosts and port == self.port
