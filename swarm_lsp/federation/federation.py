"""One process's federation: the roster of peers, kept current by health checks and discovery.

- Manual peers come from the peer list (peer_list.py); discovered ones from mDNS and the beacon.
- Every peer is checked every `health_interval` seconds (backing off while it fails): a swarm-lsp
  peer answers the hello (who it is, its load, the proof of the secret); an engine lists its models.
  The checks measure latency and read load, and feed the circuit breaker (health.py).
- Discovered peers are only used once trusted. Discovered peers that leave, stay silent or stay down
  for `gone_after` seconds are shown as gone and get no voters.
- Announcing (mDNS and beacon) happens only in a process that serves the HTTP API (`announce`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import httpx

from swarm_lsp.config import FederationSettings
from swarm_lsp.federation.beacon import Beacon, beacon_payload
from swarm_lsp.federation.peer_backend import PeerBackend
from swarm_lsp.federation.peer_list import ManualPeer, PeerList, PeerListError, normalise_url
from swarm_lsp.federation.protocol import (
    HELLO_PATH,
    PROTOCOL_VERSION,
    IncompatiblePeer,
    PeerProtocolError,
    SignatureCheck,
    hello_proof,
    new_nonce,
    parse_hello,
    proof_holds,
)
from swarm_lsp.federation.roster import Peer, Roster, Source
from swarm_lsp.models.base import Backend
from swarm_lsp.models.remote.backend import RemoteBackend
from swarm_lsp.models.remote.http import normalise_base_url

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0
FIRST_CHECK_WAIT_S = 5.0
"""A request waits at most this long for the first round of checks (peers unknown until then)."""


class Federation:
    def __init__(
        self, settings: FederationSettings, *, peer_list: PeerList | None = None, instance: str = ""
    ) -> None:
        self.settings = settings
        self.instance = instance or secrets.token_hex(6)
        self.peer_list = peer_list or PeerList()
        self.roster = Roster(failures_to_open=settings.failures_to_open, open_seconds=settings.open_seconds)
        self.signatures = SignatureCheck(settings.secret)
        self._manual: dict[str, ManualPeer] = {}
        self._due: dict[str, float] = {}
        self._wake: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._first_round: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closers: list[Any] = []
        self._client: httpx.AsyncClient | None = None
        self.list_problem = ""
        self.serving = 0
        """Peers' generate requests this process is running now (its load, as peers see it)."""
        self.reload_manual()

    # ---------------------------------------------------------------- lifetime

    async def start(self) -> None:
        """Load the manual peers, start the health checks and discovery (once; idempotent)."""
        if self._watcher is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._first_round = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(CHECK_TIMEOUT_S))
        self._watcher = asyncio.create_task(self._watch(), name="federation-health")
        await asyncio.to_thread(self._start_discovery)

    async def ready(self) -> None:
        """Start if needed and wait (a few seconds at most) until every peer was checked once."""
        await self.start()
        assert self._first_round is not None
        try:
            await asyncio.wait_for(self._first_round.wait(), FIRST_CHECK_WAIT_S)
        except asyncio.TimeoutError:
            log.info("federation: some peers were not checked yet; this vote goes without them")

    def close_discovery(self) -> None:
        """Stop announcing and browsing (outside the event loop the health checks ran in)."""
        for closer in self._closers:
            closer.close()
        self._closers.clear()

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for closer in self._closers:
            await asyncio.to_thread(closer.close)
        self._closers.clear()
        for peer in self.roster.snapshot():
            await _close_backend(peer)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _start_discovery(self) -> None:
        interfaces = self.settings.interfaces
        if self.settings.mdns:
            from swarm_lsp.federation.discovery import MdnsBrowser

            self._closers.append(
                MdnsBrowser(
                    own_instance=self.instance,
                    interfaces=interfaces,
                    found=lambda url, instance, protocol: self._discovered(url, "mdns"),
                    lost=lambda url: self.roster.depart(url, "mdns"),
                )
            )
        if self.settings.beacon and not any(isinstance(c, Beacon) for c in self._closers):
            self._closers.append(self._beacon(None))

    def _beacon(self, payload: bytes | None, address: str = "") -> Beacon:
        return Beacon(
            port=self.settings.beacon_port,
            address=address or self.settings.beacon_address or "255.255.255.255",
            own_instance=self.instance,
            heard=lambda url, instance, protocol: self._discovered(url, "beacon"),
            payload=payload,
        )

    async def announce(self, *, address: str, port: int, model: str, slots: int) -> None:
        """Make this process findable: mDNS on `address` (its API's), and the beacon."""
        loopback = address.startswith("127.")
        if self.settings.mdns:
            from swarm_lsp.federation.discovery import MdnsAnnouncer

            interfaces = ["127.0.0.1"] if loopback else self.settings.interfaces
            announcer = MdnsAnnouncer(
                instance=self.instance, address=address, port=port, model=model, slots=slots,
                interfaces=interfaces,
            )  # fmt: skip
            await asyncio.to_thread(announcer.register)
            self._closers.append(announcer)
        if self.settings.beacon:
            target = self.settings.beacon_address or ("127.255.255.255" if loopback else "255.255.255.255")
            for closer in [c for c in self._closers if isinstance(c, Beacon)]:
                await asyncio.to_thread(closer.close)
                self._closers.remove(closer)
            self._closers.append(self._beacon(beacon_payload(self.instance, port, model), target))

    # ---------------------------------------------------------------- membership

    def reload_manual(self) -> None:
        """Take the peer list file as it is now (added and removed peers). An unreadable file keeps
        the peers as they were and is reported in `list_problem`."""
        try:
            wanted = {peer.url: peer for peer in self.peer_list.load()}
        except PeerListError as error:
            log.error("federation: %s", error)
            self.list_problem = str(error)
            return
        self.list_problem = ""
        for url in set(self._manual) - set(wanted):
            self.roster.depart(url, "manual")
            peer = self.roster.peers.get(url)
            if peer is not None and peer.departed:
                self.roster.forget(url)
                self._schedule_close(peer)
        for url, manual in wanted.items():
            kind = "engine" if manual.kind == "engine" else "swarm"
            known = self.roster.peers.get(url)
            if known is not None and known.token != manual.token:
                self._schedule_close(known)  # its backend holds the old token
                known.token = manual.token
            peer = self.roster.upsert(url, kind, "manual", token=manual.token)
            if manual.kind == "engine":
                peer.model = manual.model or peer.model
                peer.slots = manual.slots
            self._due.setdefault(url, 0.0)
        self._manual = wanted
        self._poke()

    def _discovered(self, url: str, source: Source) -> None:
        """Called from discovery threads."""
        url = normalise_url(url)
        known = url in self.roster.peers and not self.roster.peers[url].departed
        self.roster.upsert(url, "swarm", source)
        if not known:
            self._due[url] = 0.0
            self._poke()

    def _poke(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _schedule_close(self, peer: Peer) -> None:
        if self._loop is not None and peer.backend is not None:
            asyncio.run_coroutine_threadsafe(_close_backend(peer), self._loop)

    def snapshot(self) -> list[dict[str, Any]]:
        return [peer.to_dict() for peer in self.roster.snapshot()]

    # ---------------------------------------------------------------- health

    async def _watch(self) -> None:
        assert self._wake is not None and self._first_round is not None
        interval = self.settings.health_interval
        while True:
            now = time.monotonic()
            due = [peer for peer in self.roster.snapshot() if self._due.get(peer.url, 0.0) <= now]
            due = [peer for peer in due if not peer.departed or "manual" in peer.sources]
            await asyncio.gather(*(self.check(peer) for peer in due))
            for peer in due:
                self._due[peer.url] = time.monotonic() + peer.health.next_check_in(interval)
            for peer in self.roster.expire(self.settings.gone_after):
                log.info("federation: %s is gone", peer.label)
            self._first_round.set()
            waits = [at - time.monotonic() for url, at in self._due.items() if url in self.roster.peers]
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, min([interval, *waits])))

    async def check(self, peer: Peer) -> None:
        """One health check; the peer's status, trust, load and latency follow from it."""
        started = time.monotonic()
        try:
            if peer.kind == "engine":
                active = await self._check_engine(peer)
            else:
                active = await self._check_swarm(peer)
        except PeerProtocolError as error:
            peer.check_failed(str(error), incompatible=isinstance(error, IncompatiblePeer))
            return
        except httpx.HTTPError as error:
            peer.check_failed(f"unreachable: {type(error).__name__}" + (f": {error}" if str(error) else ""))
            return
        peer.checked(time.monotonic() - started, active)
        if peer.backend is None and (peer.kind == "engine" or peer.trust == "trusted"):
            peer.backend = self._backend_for(peer)

    async def _check_swarm(self, peer: Peer) -> int | None:
        """The peer's load from its hello (None when it turned out to be an engine)."""
        assert self._client is not None
        nonce = new_nonce()
        response = await self._client.post(f"{peer.url}{HELLO_PATH}", json={"nonce": nonce})
        if (
            response.status_code in (404, 405)
            and "manual" in peer.sources
            and self._manual_kind(peer) == "auto"
        ):
            peer.kind = "engine"  # not a swarm-lsp peer: an OpenAI-compatible engine
            peer.slots = self._manual[peer.url].slots
            return await self._check_engine(peer)
        if response.status_code == 403 and "federation is off" in response.text:
            raise PeerProtocolError("it is a swarm-lsp peer with federation switched off")
        try:
            body = response.json()
        except ValueError:
            raise PeerProtocolError(
                f"it answered HTTP {response.status_code} with something that is not JSON"
            ) from None
        hello = parse_hello(body)
        if hello.instance == self.instance:
            self.roster.forget(peer.url)  # this process, found by its own discovery
            return None
        peer.instance, peer.model, peer.slots = hello.instance, hello.model, hello.slots
        peer.params_b = hello.params_b
        if not self.settings.secret:
            peer.trust, peer.problem = "untrusted", "this machine has no federation.secret"
        elif not proof_holds(self.settings.secret, nonce, hello.instance, _netloc(peer.url), hello.proof):
            peer.trust = "untrusted"
            peer.problem = "it did not prove the federation secret (none, or another one)"
        else:
            peer.trust = "trusted"
        if peer.trust == "untrusted":
            await _close_backend(peer)
            raise _Untrusted(peer.problem)
        return hello.active

    async def _check_engine(self, peer: Peer) -> None:
        """Engines report no load: this process counts only its own voters on them."""
        assert self._client is not None
        base = normalise_base_url(peer.url)
        headers = {"Authorization": f"Bearer {peer.token}"} if peer.token else {}
        response = await self._client.get(f"{base}/models", headers=headers)
        if response.status_code in (401, 403):
            raise PeerProtocolError(f"it refused the token (HTTP {response.status_code}): check --token")
        try:
            entries = response.json()["data"]
            names = [str(entry["id"]) for entry in entries]
        except (ValueError, KeyError, TypeError):
            raise PeerProtocolError(
                f"it answered HTTP {response.status_code} but not an OpenAI-compatible model list"
            ) from None
        if not names:
            raise PeerProtocolError("it serves no model")
        if not peer.model:
            peer.model = names[0]

    def _manual_kind(self, peer: Peer) -> str:
        manual = self._manual.get(peer.url)
        return manual.kind if manual is not None else "swarm"

    def _backend_for(self, peer: Peer) -> Backend:
        timeout = self.settings.request_timeout
        if peer.kind == "engine":
            return RemoteBackend(
                peer.url, peer.model or None, api_key=peer.token or None, timeout=timeout, retries=0,
                max_parallel=max(1, peer.slots),
            )  # fmt: skip
        return PeerBackend(
            peer.url, secret=self.settings.secret, model=peer.model, slots=peer.slots, timeout=timeout
        )

    # ---------------------------------------------------------------- the other side

    def hello_answer(
        self, nonce: str, *, host: str, model: str, slots: int, active: int, params_b: float
    ) -> dict[str, Any]:
        """What this process says to a peer's hello; the proof only when it has a secret."""
        secret = self.settings.secret
        return {
            "instance": self.instance,
            "protocol": PROTOCOL_VERSION,
            "model": model,
            "slots": slots,
            "active": active,
            "params_b": params_b,
            "proof": hello_proof(secret, nonce, self.instance, host) if secret else None,
        }


class _Untrusted(PeerProtocolError):
    """The peer answered but did not prove the secret: seen, not used."""


def _netloc(url: str) -> str:
    return httpx.URL(url).netloc.decode()


async def _close_backend(peer: Peer) -> None:
    backend, peer.backend = peer.backend, None
    if backend is not None:
        await backend.aclose()
