"""The manual peer list: peers the user added by hand, kept in the user's config folder.

`peers.json` beside the user settings file: a list of {url, kind, token, model, slots}. It is
written whole to a temporary file and renamed over the old one (readable by the user alone, since
it may hold tokens), so a crash never leaves half a list.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.config import user_config_path

ManualKind = Literal["auto", "swarm", "engine"]
KINDS: tuple[ManualKind, ...] = ("auto", "swarm", "engine")


class PeerListError(SwarmLspError):
    """The peer list file is unreadable, or a peer given to add or remove is invalid."""


@dataclass(frozen=True)
class ManualPeer:
    url: str
    kind: ManualKind = "auto"
    """auto: a swarm-lsp peer if it answers the federation hello, else an OpenAI-compatible engine."""
    token: str = ""
    model: str = ""
    """For an engine: the model name it serves (empty: its first)."""
    slots: int = 4
    """For an engine: requests it may run at once for this machine."""


def default_path() -> Path:
    return user_config_path().parent / "peers.json"


def normalise_url(url: str) -> str:
    """`host:port` gains http://; a trailing slash goes. Anything but an http(s) URL is refused."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise PeerListError(f"{url!r} is not a URL: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise PeerListError(f"{url!r} is not an http(s) URL with a host, such as http://192.168.1.20:17615")
    return url.rstrip("/")


class PeerList:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def load(self) -> list[ManualPeer]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise PeerListError(
                f"cannot read the peer list {self.path}: {error}; fix or delete the file"
            ) from None
        if not isinstance(raw, list):
            raise PeerListError(f"the peer list {self.path} is not a JSON list; fix or delete the file")
        return [_entry(item, self.path) for item in raw]

    def add(self, peer: ManualPeer) -> list[ManualPeer]:
        """Add or replace (same URL) a peer; returns the new list."""
        if peer.kind not in KINDS:
            raise PeerListError(f"unknown peer kind {peer.kind!r}; one of {', '.join(KINDS)}")
        if not 1 <= peer.slots <= 256:
            raise PeerListError(f"slots must be 1 to 256, got {peer.slots}")
        peer = ManualPeer(normalise_url(peer.url), peer.kind, peer.token, peer.model, peer.slots)
        peers = [existing for existing in self.load() if existing.url != peer.url]
        peers.append(peer)
        self._write(peers)
        return peers

    def remove(self, url: str) -> list[ManualPeer]:
        url = normalise_url(url)
        peers = self.load()
        kept = [peer for peer in peers if peer.url != url]
        if len(kept) == len(peers):
            known = ", ".join(peer.url for peer in peers) or "none"
            raise PeerListError(f"{url} is not in the peer list (the list has: {known})")
        self._write(kept)
        return kept

    def _write(self, peers: list[ManualPeer]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".peers-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump([asdict(peer) for peer in peers], out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _entry(item: Any, path: Path) -> ManualPeer:
    if not isinstance(item, dict) or not isinstance(item.get("url"), str):
        raise PeerListError(f"the peer list {path} has an entry without a url: {str(item)[:80]}")
    kind = item.get("kind", "auto")
    if kind not in KINDS:
        raise PeerListError(f"the peer list {path} has kind {kind!r} for {item['url']}; one of {KINDS}")
    try:
        slots = int(item.get("slots", 4))
    except (TypeError, ValueError):
        raise PeerListError(
            f"the peer list {path} has slots that are not a number for {item['url']}"
        ) from None
    return ManualPeer(item["url"], kind, str(item.get("token") or ""), str(item.get("model") or ""), slots)
