"""This machine's side of federation: answering peers' hellos and writing voters for their votes.

A peer's generate request runs on the model beside this machine's own requests (the backend decodes
one batch at a time), shows on the dashboard under the door "peer", counts in the load this machine
tells its peers, and is cancelled when the peer hangs up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.federation.capability import params_from_name
from swarm_lsp.federation.federation import Federation
from swarm_lsp.federation.peer_list import ManualPeer, PeerList
from swarm_lsp.federation.protocol import GENERATE_PATH, SIGNATURE_HEADER, SignatureRejected
from swarm_lsp.models.base import GenerationRequest, Message, Sampling
from swarm_lsp.sockets import WILDCARD_ADDRESSES, primary_address
from swarm_lsp.swarm.queue import QueueFull
from swarm_lsp.workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["SIGNATURE_HEADER", "SignatureRejected"]  # what the HTTP door needs of the protocol

MAX_VOTERS = 64
DISCONNECT_POLL_S = 0.1


class FederationOff(SwarmLspError):
    """This process does not federate (federation.enabled is false)."""


class BadPeerRequest(SwarmLspError):
    """A peer's request body is not what the protocol says."""


async def start(workspace: Workspace, *, api_host: str, api_port: int) -> None:
    """With federation on: start the health checks and discovery, and announce this API."""
    federation = workspace.federation
    if federation is None:
        return
    await federation.start()
    address = api_host.strip("[]")
    if address in WILDCARD_ADDRESSES:
        address = primary_address()
    if ":" in address:
        log.warning("federation: the API listens on IPv6 %s; announce and beacon are IPv4 only", address)
        return
    info = workspace.model_info()
    slots = _slots(workspace)
    await federation.announce(address=address, port=api_port, model=str(info.get("name") or ""), slots=slots)


async def stop(workspace: Workspace) -> None:
    federation = workspace.federation
    if federation is not None:
        await federation.aclose()


def hello(workspace: Workspace, body: Any, host: str) -> dict[str, Any]:
    """Who this process is, its load, and the proof of the secret for `host` (the Host it was asked at)."""
    federation = _federation(workspace)
    nonce = body.get("nonce") if isinstance(body, dict) else None
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
        raise BadPeerRequest('send {"nonce": "<8 to 128 characters>"}')
    info = workspace.model_info()
    model = str(info.get("name") or "")
    slots = _slots(workspace)
    return federation.hello_answer(
        nonce,
        host=host,
        model=model,
        slots=slots,
        active=workspace.activity.busy_sequences(),
        params_b=params_from_name(model),
    )


async def generate(
    workspace: Workspace, body: bytes, signature: str | None, disconnected: Callable[[], Awaitable[bool]]
) -> dict[str, Any]:
    """Candidates from this machine's model for a peer's vote (the request must be signed)."""
    federation = _federation(workspace)
    federation.signatures.verify(signature, "POST", GENERATE_PATH, body)
    request = _request(body)
    cancel = CancellationToken()
    request.cancel = cancel
    record = workspace.activity.begin(
        door="peer",
        kind="voters",
        model=str(workspace.model_info().get("name") or ""),
        prompt=request.messages[-1].content if request.messages else request.prompt or "",
        voters=request.n,
        max_tokens=request.max_tokens,
    )
    # Not a turn in the queue: two machines each holding their own turn while waiting for the
    # other's voters would wait for each other until the deadline. The backend takes one batch at a
    # time by itself; the peers' requests are bounded here instead.
    limit = max(1, workspace.settings.swarm.queue_limit)
    if federation.serving >= limit:
        workspace.activity.failed(record, "refused: too many peer requests")
        raise QueueFull(f"this machine already runs {federation.serving} peers' requests", retry_after_s=5)
    federation.serving += 1
    try:
        backend = (await asyncio.to_thread(workspace.open_backend))[0]
        temperatures = [request.sampling_for(i).temperature for i in range(request.n)]
        workspace.activity.started(record, temperatures)
        work = asyncio.ensure_future(backend.generate(request))
        while not work.done():
            await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
            if not work.done() and await disconnected():
                cancel.cancel()
        candidates = work.result()
    except Exception as error:
        workspace.activity.failed(record, str(error), cancelled=cancel.cancelled)
        raise
    finally:
        federation.serving -= 1
    answer = [
        {
            "text": candidate.text,
            "finish_reason": candidate.finish_reason,
            "completion_tokens": candidate.completion_tokens,
            "prompt_tokens": candidate.prompt_tokens,
        }
        for candidate in candidates
    ]
    workspace.activity.finished(
        record,
        {
            "candidates": [
                {
                    "index": i,
                    "text": item["text"],
                    "score": 0.0,
                    "votes": 0,
                    "valid": True,
                    "invalid_reason": "",
                    "finish_reason": item["finish_reason"],
                    "completion_tokens": item["completion_tokens"],
                }
                for i, item in enumerate(answer)
            ],
            "notes": ["voters for a vote held on another machine"],
        },
    )
    return {"candidates": answer}


def _slots(workspace: Workspace) -> int:
    """Sequences this machine's model decodes at once (1 until it is loaded)."""
    return max(1, workspace.runner.backend.info.max_parallel) if workspace.model_loaded else 1


def _federation(workspace: Workspace) -> Federation:
    federation = workspace.federation
    if federation is None:
        raise FederationOff("federation is off on this peer (federation.enabled = false)")
    return federation


def _request(body: bytes) -> GenerationRequest:
    try:
        data = json.loads(body)
        n = int(data["n"])
        if not 1 <= n <= MAX_VOTERS:
            raise BadPeerRequest(f"n must be 1 to {MAX_VOTERS}, got {n}")
        samplings = [Sampling(**dict(item)) for item in data["samplings"]]
        messages = [Message(item["role"], str(item["content"])) for item in data.get("messages") or []]
        for message in messages:
            if message.role not in ("system", "user", "assistant"):
                raise BadPeerRequest(f"unknown message role {message.role!r}")
        prompt = data.get("prompt")
        timeout = data.get("timeout")
        return GenerationRequest(
            messages=messages,
            prompt=str(prompt) if prompt is not None else None,
            n=n,
            sampling=samplings,
            max_tokens=int(data["max_tokens"]),
            stop=[str(item) for item in data.get("stop") or []],
            timeout=float(timeout) if timeout is not None else None,
        )
    except BadPeerRequest:
        raise
    except (ValueError, KeyError, TypeError) as error:
        raise BadPeerRequest(f"the generate request is malformed: {error}") from None


# ------------------------------------------------------------------ the manual peer list


def peers_view(workspace: Workspace) -> dict[str, Any]:
    """The peers as this process sees them (live when federation is on), for the dashboard."""
    federation = workspace.federation
    if federation is not None:
        return {
            "enabled": True,
            "instance": federation.instance,
            "peers": federation.snapshot(),
            "problem": federation.list_problem or None,
        }
    listed = [
        {"url": peer.url, "name": peer.url.split("://", 1)[-1], "kind": peer.kind, "status": "off",
         "sources": ["manual"], "has_token": bool(peer.token)}
        for peer in PeerList().load()
    ]  # fmt: skip
    return {"enabled": False, "instance": None, "peers": listed}


def add_peer(workspace: Workspace, url: str, *, token: str = "", kind: str = "auto", model: str = "") -> None:
    PeerList().add(ManualPeer(url, kind, token, model))  # type: ignore[arg-type]
    if workspace.federation is not None:
        workspace.federation.reload_manual()


def remove_peer(workspace: Workspace, url: str) -> None:
    PeerList().remove(url)
    if workspace.federation is not None:
        workspace.federation.reload_manual()
