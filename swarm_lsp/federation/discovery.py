"""mDNS: announce this swarm-lsp API as `_swarm-lsp._tcp.local.` and find the others (zeroconf).

TXT records carry the instance id (so a process does not add itself), the protocol version, the
model and its slots. Discovery is not trust: a found peer is used only once it proves the shared
secret (federation.py). A peer that unregisters is reported gone at once; one that dies without
unregistering is caught by the health checks.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence

from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from swarm_lsp.federation.protocol import PROTOCOL_VERSION, SERVICE_TYPE

log = logging.getLogger(__name__)

Found = Callable[[str, str, int], None]
"""(url, instance id, protocol version) of a peer that was found or changed."""
Lost = Callable[[str], None]
"""The url of a peer that unregistered."""


def _zeroconf(interfaces: Sequence[str]) -> Zeroconf:
    chosen: list[str] | InterfaceChoice = list(interfaces) if interfaces else InterfaceChoice.All
    return Zeroconf(interfaces=chosen, ip_version=IPVersion.V4Only)


class MdnsAnnouncer:
    """Registers this process's API while it runs (registration probes the name: about 2 s)."""

    def __init__(
        self, *, instance: str, address: str, port: int, model: str, slots: int, interfaces: Sequence[str]
    ) -> None:
        self._zeroconf = _zeroconf(interfaces)
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"swarm-lsp-{instance}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(address)],
            port=port,
            properties={"id": instance, "proto": str(PROTOCOL_VERSION), "model": model, "slots": str(slots)},
            server=f"swarm-lsp-{instance}.local.",
        )

    def register(self) -> None:
        self._zeroconf.register_service(self._info, allow_name_change=True)

    def close(self) -> None:
        try:
            self._zeroconf.unregister_service(self._info)
        except Exception as error:  # closing anyway; a peer that misses the goodbye drops us by health
            log.debug("mDNS unregister failed: %s", error)
        self._zeroconf.close()


class MdnsBrowser:
    """Calls `found` for every swarm-lsp service that appears or changes, `lost` when one leaves."""

    def __init__(self, *, own_instance: str, interfaces: Sequence[str], found: Found, lost: Lost) -> None:
        self._own = own_instance
        self._found = found
        self._lost = lost
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()
        self._zeroconf = _zeroconf(interfaces)
        self._browser = ServiceBrowser(self._zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            with self._lock:
                url = self._urls.pop(name, None)
            if url is not None:
                self._lost(url)
            return
        # Resolving asks the network again: not on zeroconf's own thread.
        threading.Thread(target=self._resolve, args=(service_type, name), daemon=True).start()

    def _resolve(self, service_type: str, name: str) -> None:
        info = self._zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is None or info.port is None:
            return
        properties = {
            (key or b"").decode(errors="replace"): (value or b"").decode(errors="replace")
            for key, value in info.properties.items()
        }
        instance = properties.get("id", "")
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not addresses or instance == self._own:
            return
        try:
            protocol = int(properties.get("proto", "0"))
        except ValueError:
            protocol = 0
        url = f"http://{addresses[0]}:{info.port}"
        with self._lock:
            self._urls[name] = url
        self._found(url, instance, protocol)

    def close(self) -> None:
        self._browser.cancel()
        self._zeroconf.close()
