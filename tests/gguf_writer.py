"""A tiny GGUF writer for tests: real files with chosen metadata and small zero-filled tensors."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL = range(8)
STRING, ARRAY, UINT64, INT64, FLOAT64 = 8, 9, 10, 11, 12

_FORMATS = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "?",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}

# ggml type id -> (elements per block, bytes per block), for the types tests use.
F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K = 0, 1, 2, 3, 8, 12, 14
_BLOCKS = {
    F32: (1, 4),
    F16: (1, 2),
    Q4_0: (32, 18),
    Q4_1: (32, 20),
    Q8_0: (32, 34),
    Q4_K: (256, 144),
    Q6_K: (256, 210),
}


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit GGUF type; for arrays, element_type says what they hold."""

    value_type: int
    value: Any
    element_type: int | None = None


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int = F32

    @property
    def nbytes(self) -> int:
        elements = 1
        for dim in self.shape:
            elements *= dim
        block_elements, block_bytes = _BLOCKS[self.ggml_type]
        return -(-elements // block_elements) * block_bytes


def pack_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _infer(value: Any) -> Typed:
    if isinstance(value, Typed):
        return value
    if isinstance(value, bool):
        return Typed(BOOL, value)
    if isinstance(value, int):
        return Typed(UINT32 if 0 <= value < 2**32 else INT64, value)
    if isinstance(value, float):
        return Typed(FLOAT32, value)
    if isinstance(value, str):
        return Typed(STRING, value)
    if isinstance(value, (list, tuple)):
        element_type = _infer(value[0]).value_type if value else UINT32
        return Typed(ARRAY, list(value), element_type)
    raise TypeError(f"cannot infer a GGUF type for {value!r}")


def pack_value(typed: Typed) -> bytes:
    """The value's bytes, without the leading type id."""
    if typed.value_type == STRING:
        return pack_string(typed.value)
    if typed.value_type == ARRAY:
        element_type = typed.element_type if typed.element_type is not None else UINT32
        body = b"".join(pack_value(_element(element_type, item)) for item in typed.value)
        return struct.pack("<IQ", element_type, len(typed.value)) + body
    return struct.pack("<" + _FORMATS[typed.value_type], typed.value)


def _element(element_type: int, item: Any) -> Typed:
    if isinstance(item, Typed):
        return item
    if element_type == ARRAY:
        return _infer(list(item))
    return Typed(element_type, item)


def pack_kv(key: str, value: Any) -> bytes:
    typed = _infer(value)
    return pack_string(key) + struct.pack("<I", typed.value_type) + pack_value(typed)


def gguf_bytes(
    metadata: Mapping[str, Any],
    tensors: Sequence[Tensor] = (),
    *,
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    """A complete GGUF file: header, metadata, tensor infos, padding and zeroed tensor data."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value in metadata.items():
        out += pack_kv(key, value)
    offset = 0
    for tensor in tensors:
        out += pack_string(tensor.name) + struct.pack("<I", len(tensor.shape))
        out += struct.pack(f"<{len(tensor.shape)}Q", *tensor.shape)
        out += struct.pack("<IQ", tensor.ggml_type, offset)
        offset += -(-tensor.nbytes // alignment) * alignment
    out += b"\0" * (-len(out) % alignment)
    for tensor in tensors:
        out += b"\0" * (-(-tensor.nbytes // alignment) * alignment)
    return bytes(out)


def llama_metadata(
    *,
    name: str = "Tiny Llama",
    layers: int = 2,
    embedding: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 300,
    file_type: int | None = 7,
) -> dict[str, Any]:
    """Metadata shaped like a llama model's, small enough to write in a test."""
    metadata: dict[str, Any] = {
        "general.architecture": "llama",
        "general.name": name,
        "llama.context_length": 2048,
        "llama.embedding_length": embedding,
        "llama.block_count": layers,
        "llama.attention.head_count": heads,
        "llama.attention.head_count_kv": kv_heads,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(vocab)],
        "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
    }
    if file_type is not None:
        metadata["general.file_type"] = file_type
    return metadata


def tiny_tensors(embedding: int = 64, vocab: int = 300) -> list[Tensor]:
    return [
        Tensor("token_embd.weight", (embedding, vocab), Q8_0),
        Tensor("output_norm.weight", (embedding,), F32),
    ]


def write_gguf(
    path: Path, metadata: Mapping[str, Any] | None = None, tensors: Sequence[Tensor] | None = None
) -> Path:
    """Write a small valid llama-like GGUF (or one with the given metadata and tensors) to path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        gguf_bytes(
            llama_metadata() if metadata is None else metadata, tiny_tensors() if tensors is None else tensors
        )
    )
    return path
