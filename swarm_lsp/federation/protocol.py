"""What two swarm-lsp processes say to each other, and how each proves it holds the shared secret.

- `POST /federation/v1/hello` with `{"nonce": ...}`: the peer answers who it is (instance id,
  protocol version, model, capacity, load) and `proof` = HMAC(secret, "hello" | nonce | instance |
  the Host it was asked at).
  A peer whose proof checks out is trusted; one without a proof, or a wrong one, is only seen.
- `POST /federation/v1/generate`: candidates from the peer's own model for a vote held elsewhere.
  The caller signs the request (`X-Swarm-Signature`: a timestamp, a nonce and HMAC(secret, time |
  nonce | method | path | sha256(body))); the peer refuses stale, replayed or unsigned requests.

The secret itself never crosses the wire, and neither side logs it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from swarm_lsp.basics import SwarmLspError

PROTOCOL_VERSION = 1
SERVICE_TYPE = "_swarm-lsp._tcp.local."
HELLO_PATH = "/federation/v1/hello"
GENERATE_PATH = "/federation/v1/generate"
SIGNATURE_HEADER = "X-Swarm-Signature"
MAX_CLOCK_SKEW_S = 300.0
"""A signed request older or newer than this is refused (the machines' clocks must roughly agree)."""


class PeerProtocolError(SwarmLspError):
    """A peer answered something this version cannot use (garbage, another protocol version)."""


class IncompatiblePeer(PeerProtocolError):
    """A swarm-lsp peer that speaks another protocol version."""


class SignatureRejected(SwarmLspError):
    """A request to this peer was not signed with the shared secret, or was stale or replayed."""


def new_nonce() -> str:
    return secrets.token_hex(16)


def hello_proof(secret: str, nonce: str, instance: str, host: str) -> str:
    """`host` is the peer's address as the asker wrote it (the Host header): a proof made for one
    address is worthless to a machine that relays it from another."""
    return _mac(secret, f"hello|{nonce}|{instance}|{host.lower()}")


def proof_holds(secret: str, nonce: str, instance: str, host: str, proof: object) -> bool:
    expected = hello_proof(secret, nonce, instance, host)
    return isinstance(proof, str) and hmac.compare_digest(expected, proof)


def sign(secret: str, method: str, path: str, body: bytes, *, now: float | None = None) -> str:
    """The signature header's value for one request."""
    stamp = f"{(time.time() if now is None else now):.3f}"
    nonce = new_nonce()
    return f"t={stamp},n={nonce},s={_mac(secret, _signed_text(stamp, nonce, method, path, body))}"


class SignatureCheck:
    """Checks signed requests; remembers recent nonces so a captured request cannot be sent again."""

    def __init__(self, secret: str, *, remembered: int = 4096) -> None:
        self._secret = secret
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._remembered = remembered

    def verify(self, header: str | None, method: str, path: str, body: bytes) -> None:
        if not self._secret:
            raise SignatureRejected("federation has no secret on this machine; set federation.secret")
        if not header:
            raise SignatureRejected(f"the request carries no {SIGNATURE_HEADER}: only trusted peers may ask")
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        stamp, nonce, given = fields.get("t", ""), fields.get("n", ""), fields.get("s", "")
        try:
            skew = abs(time.time() - float(stamp))
        except ValueError:
            raise SignatureRejected("the request's signature is malformed") from None
        if skew > MAX_CLOCK_SKEW_S:
            raise SignatureRejected(
                f"the request was signed {skew:.0f} s away from this machine's clock (at most "
                f"{MAX_CLOCK_SKEW_S:.0f} s): check both clocks"
            )
        expected = _mac(self._secret, _signed_text(stamp, nonce, method, path, body))
        if not hmac.compare_digest(expected, given):
            raise SignatureRejected("the request was not signed with this federation's secret")
        if nonce in self._seen:
            raise SignatureRejected("the request was already seen (a replay)")
        self._seen[nonce] = time.time()
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)


@dataclass(frozen=True)
class Hello:
    """What a swarm-lsp peer says about itself."""

    instance: str
    protocol: int
    model: str
    slots: int
    """Sequences its model decodes at once."""
    active: int
    """Sequences (voters) running or waiting on its model now."""
    params_b: float
    """The model's size in billions of parameters (0 when unknown)."""
    proof: str | None


def parse_hello(body: Any) -> Hello:
    """A peer's hello, checked field by field; PeerProtocolError says what is wrong."""
    if not isinstance(body, dict) or "instance" not in body or "protocol" not in body:
        raise PeerProtocolError("it answered, but not as a swarm-lsp peer (no instance or protocol)")
    protocol = body["protocol"]
    if not isinstance(protocol, int) or protocol != PROTOCOL_VERSION:
        raise IncompatiblePeer(
            f"it speaks federation protocol {protocol!r} and this machine speaks {PROTOCOL_VERSION}: "
            "install the same swarm-lsp version on both"
        )
    try:
        return Hello(
            instance=str(body["instance"]),
            protocol=protocol,
            model=str(body.get("model") or ""),
            slots=max(1, int(body.get("slots") or 1)),
            active=max(0, int(body.get("active") or 0)),
            params_b=max(0.0, float(body.get("params_b") or 0.0)),
            proof=body.get("proof") if isinstance(body.get("proof"), str) else None,
        )
    except (TypeError, ValueError) as error:
        raise PeerProtocolError(f"its hello has a field of the wrong type: {error}") from None


def _signed_text(stamp: str, nonce: str, method: str, path: str, body: bytes) -> str:
    return f"{stamp}|{nonce}|{method.upper()}|{path}|{hashlib.sha256(body).hexdigest()}"


def _mac(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
