"""A sync computed as explicit lists before any work starts, and what the sync then did.

Light on purpose: the CLI's no-change check and the front doors use these types without opening
the index (and importing lancedb).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm_lsp.index.ignore import Skipped


@dataclass
class SyncPlan:
    to_parse: list[str] = field(default_factory=list)
    to_delete: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    hashed: dict[str, tuple[int, int, str, bytes]] = field(default_factory=dict, repr=False)
    """rel path -> (size, mtime_ns, sha256, bytes) for files already read while planning."""


@dataclass
class SyncReport:
    parsed: int = 0
    deleted: int = 0
    unchanged: int = 0
    chunks_written: int = 0
    embedded: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    waited_for_lock_s: float = 0.0
