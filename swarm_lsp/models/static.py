"""A static embedding model (model2vec, e.g. potion-code) as an `Embedder`.

A static model is a table of one vector per token: a text's vector is the mean of its tokens'
vectors. No transformer runs, so it embeds thousands of chunks per second on one CPU core, on
every platform (pure numpy and the `tokenizers` wheel), at some cost in quality against e5.

This is the only module that imports model2vec, and only when an embedder is created, so it is
an optional extra (`pip install "swarm-lsp[fast]"`). The model is read from a local folder only,
never fetched by hub name: `swarm-lsp models pull potion-code-16m` is the one way to download it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from swarm_lsp.models.base import BackendUnavailable, ModelError, ModelNotFound
from swarm_lsp.models.embedding import (
    DEFAULT_MAX_TOKENS,
    EmbeddingError,
    PrefixedEmbedder,
    StatsRecorder,
    clean_text,
    l2_normalise,
    make_id,
)

PULL_HINT = (
    'Run `swarm-lsp models pull potion-code-16m` (then `index.embedder = "static"` finds it), or set '
    "`index.embedder_model` to the folder of a model2vec model (config.json, model.safetensors, "
    "tokenizer.json)."
)
_FINGERPRINT_FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "tokenizer.json",
    "model.safetensors",
    "0_StaticEmbedding/tokenizer.json",
    "0_StaticEmbedding/model.safetensors",
)
_SAMPLE_BYTES = 65_536


class StaticEmbedder(PrefixedEmbedder):
    """Mean-pooled token vectors from a model2vec folder, L2-normalised, float32.

    Prefixes: none (static models are symmetric). Window: a text keeps its first `max_tokens`
    tokens (model2vec's cut); `stats.truncated` counts the texts that had more.

    Id: ``static:<model>:<dimension>:noprefix:<window>t:<fingerprint>``, where the model is the
    repo name for a Hugging Face snapshot (else the folder's name) and the fingerprint hashes the
    model files' sizes and their first and last 64 KiB, so replacing the weights in the same folder
    rebuilds the vectors.

    Thread safety: model2vec re-arms the tokenizer's truncation on every call, so calls are
    serialised per sub-batch of `batch_size` texts (a few milliseconds each): a query waits for at
    most one sub-batch.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 256,
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.is_dir():
            what = "is a file, not a model folder" if path.is_file() else "not found"
            raise ModelNotFound(f"static embedding model folder {path}: {what}. {PULL_HINT}")
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        try:
            from model2vec import StaticModel
        except ImportError as error:
            raise BackendUnavailable(
                f'the static embedder needs the package model2vec ({error}): pip install "swarm-lsp[fast]"'
            ) from error
        try:
            # The path exists, so model2vec reads it and never turns to the hub.
            self._model: Any = StaticModel.from_pretrained(path, force_download=False)
        except Exception as error:  # ValueError, OSError, and the errors of safetensors and tokenizers
            raise ModelError(
                f"model2vec could not load {path} as a static embedding model: {error}. {PULL_HINT}"
            ) from error
        self.model_path = path
        self.dimension = int(self._model.dim)
        self.max_tokens = max_tokens
        self.batch_size = max(1, batch_size)
        self.query_prefix = self.passage_prefix = ""  # a static model has no instruction prefixes
        self._counter = self._counting_tokenizer(self._model)
        self.id = make_id(
            "static", _model_name(path), self.dimension, "noprefix", f"{max_tokens}t", _fingerprint(path)
        )
        self._lock = threading.Lock()
        self._stats = StatsRecorder(self.id)

    @staticmethod
    def _counting_tokenizer(model: Any) -> Any:
        """A copy of the model's tokenizer without truncation, to count the tokens of long texts."""
        counter = type(model.tokenizer).from_str(model.tokenizer.to_str())
        counter.no_truncation()
        return counter

    def close(self) -> None:
        with self._lock:
            self._model = None

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        started = time.perf_counter()
        cleaned = [clean_text(text) for text in texts]
        truncated = self._count_truncated(cleaned)
        with self._lock:
            model = self._model
            if model is None:
                raise EmbeddingError(f"embedder {self.id} is closed")
            vectors = model.encode(
                cleaned,
                max_length=self.max_tokens,
                normalize=False,
                batch_size=len(cleaned),
                use_multiprocessing=False,  # it would also set TOKENIZERS_PARALLELISM in os.environ
                show_progress_bar=False,
            )
        array = l2_normalise(np.asarray(vectors, dtype=np.float32).reshape(len(cleaned), self.dimension))
        self._stats.record(len(cleaned), time.perf_counter() - started, truncated)
        return array

    def _count_truncated(self, texts: Sequence[str]) -> int:
        # A token covers at least one byte, so only texts of more bytes than the window can be cut.
        long = [text for text in texts if len(text.encode("utf-8")) > self.max_tokens]
        if not long:
            return 0
        encodings = self._counter.encode_batch(long, add_special_tokens=False)
        return sum(len(encoding.ids) > self.max_tokens for encoding in encodings)


def _model_name(path: Path) -> str:
    """The repo name of a Hugging Face snapshot (models--ORG--NAME/snapshots/REV), else the folder's."""
    resolved = path.resolve()
    parent = resolved.parent
    if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
        return parent.parent.name.rsplit("--", 1)[-1]
    return resolved.name


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        file = path / name
        if not file.is_file():
            continue
        size = file.stat().st_size
        digest.update(f"{name}\0{size}\0".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(_SAMPLE_BYTES))
            if size > 2 * _SAMPLE_BYTES:
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:10]
