"""A UDP beacon: the fallback where mDNS is filtered. Every `interval` seconds an announcing process
sends one small JSON datagram to the broadcast address; listeners on the port learn the sender's
address from the datagram and its API port from the payload. Like mDNS it proves nothing: the
peer still has to pass the federation hello.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable

from swarm_lsp.federation.protocol import PROTOCOL_VERSION

log = logging.getLogger(__name__)

MAGIC = "swarm-lsp"
BEACON_INTERVAL_S = 2.0
MAX_DATAGRAM = 2048


def beacon_payload(instance: str, port: int, model: str) -> bytes:
    return json.dumps(
        {"service": MAGIC, "protocol": PROTOCOL_VERSION, "instance": instance, "port": port, "model": model}
    ).encode()


def parse_beacon(data: bytes) -> tuple[str, int, int] | None:
    """(instance, port, protocol) of a beacon datagram; None for anything else on the port."""
    try:
        body = json.loads(data.decode())
        if body.get("service") != MAGIC:
            return None
        port = int(body["port"])
        if not 0 < port < 65536:
            return None
        return str(body["instance"]), port, int(body.get("protocol", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Beacon:
    """Sends this process's beacon (when `payload` is given) and listens for the others'."""

    def __init__(
        self,
        *,
        port: int,
        address: str,
        own_instance: str,
        heard: Callable[[str, str, int], None],
        payload: bytes | None = None,
        interval: float = BEACON_INTERVAL_S,
    ) -> None:
        self.port = port
        self.address = address
        self._own = own_instance
        self._heard = heard
        self._payload = payload
        self._interval = interval
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._listener.bind(("", port))
        self._listener.settimeout(0.5)
        self._threads = [threading.Thread(target=self._listen, name="beacon-listen", daemon=True)]
        if payload is not None:
            self._threads.append(threading.Thread(target=self._send, name="beacon-send", daemon=True))
        for thread in self._threads:
            thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data, (host, _port) = self._listener.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            parsed = parse_beacon(data)
            if parsed is None or parsed[0] == self._own:
                continue
            instance, api_port, protocol = parsed
            self._heard(f"http://{host}:{api_port}", instance, protocol)

    def _send(self) -> None:
        assert self._payload is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            while not self._stop.is_set():
                try:
                    sender.sendto(self._payload, (self.address, self.port))
                except OSError as error:
                    log.debug("beacon not sent to %s:%s: %s", self.address, self.port, error)
                self._stop.wait(self._interval)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=2)
