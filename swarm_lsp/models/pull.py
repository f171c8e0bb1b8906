"""`swarm-lsp models pull`: the one place that downloads, and only when the user asks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from swarm_lsp.models.base import BackendUnavailable, ModelNotFound
from swarm_lsp.models.catalog import BUNDLED_NAME, CATALOG, Variant, bundled_model_path, find_entry
from swarm_lsp.models.hardware import fmt_bytes


def choose_variant(name: str, fmt: str) -> Variant:
    """NAME or NAME:QUANT -> the catalog variant to download (4-bit by default)."""
    entry = find_entry(name)
    if entry is None:
        names = ", ".join(item.name for item in CATALOG)
        raise ModelNotFound(f"{name!r} is not in the catalog. Known models: {names}")
    quant = name.split(":", 1)[1] if ":" in name else None
    candidates = [v for v in entry.variants if v.format == fmt and not v.repo.startswith("pypi:")]
    if quant is not None:
        candidates = [v for v in candidates if v.quant.lower() == quant.lower()]
    if not candidates:
        offered = ", ".join(f"{v.quant} ({v.format})" for v in entry.variants)
        raise ModelNotFound(f"{entry.name} has no {fmt} variant {quant or ''}; offered: {offered}")
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
    try:
        if variant.format == "gguf":
            return Path(huggingface_hub.hf_hub_download(variant.repo, variant.filename))
        return Path(huggingface_hub.snapshot_download(variant.repo))
    except Exception as error:  # network, auth and missing-file errors all mean the same to the user
        raise BackendUnavailable(
            f"could not download {variant.repo}: {error}. Check the network connection, or download "
            "the file yourself and set model.path in .swarm-lsp.toml."
        ) from error
