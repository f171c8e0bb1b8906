"""What the index raises; each message says what to do."""

from __future__ import annotations

from swarm_lsp.basics import SwarmLspError


class IndexStoreError(SwarmLspError):
    """The index cannot do what was asked; the message says what to do."""


class VectorSearchUnavailable(IndexStoreError):
    """The index has no embedder (full-text only mode)."""


class IndexNotReady(IndexStoreError):
    """A read-only store found an index that the writing process has not (re)built yet."""
