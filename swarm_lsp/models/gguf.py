"""Read what a GGUF model file says about itself without loading its weights.

GGUF (llama.cpp's model format, little-endian) is laid out as

    magic "GGUF" | version u32 | tensor count u64 | metadata count u64
    metadata: key (string), value type (u32), value          (repeated)
    tensor infos: name (string), n_dims u32, dims u64[n_dims], ggml type u32, offset u64
    padding to `general.alignment` (default 32), then the tensor data

A string is a u64 byte length followed by UTF-8 bytes; an array is an element type (u32), a u64
length and the elements. Everything this module needs lives before the tensor data, so the file is
memory-mapped and only the pages holding the header are ever touched: reading a multi-gigabyte
model takes milliseconds. Big arrays (the tokenizer's 50k-150k tokens and merges) are skipped,
keeping only their length.

Every length in the file is checked against the file's size before it is used, so a corrupt or
hostile file ends in a `GGUFError`, never a MemoryError or a hang.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm_lsp.models.base import ModelError

if TYPE_CHECKING:
    from swarm_lsp.models.catalog import Architecture

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS: a tensor info with more is corrupt
SMALL_ARRAY_LIMIT = 256
"""Arrays up to this length keep their values in `metadata`; longer ones keep only their length."""


class GGUFError(ModelError):
    """The file is not a GGUF model we can read: wrong magic, truncated, corrupt or unsupported."""


# --- value and tensor types -------------------------------------------------------------------

# GGUF metadata value types: id -> (name, struct format); strings and arrays have no fixed format.
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = 8, 9, 10, 11, 12

_SCALAR_FORMATS: dict[int, str] = {
    _UINT8: "B",
    _INT8: "b",
    _UINT16: "H",
    _INT16: "h",
    _UINT32: "I",
    _INT32: "i",
    _FLOAT32: "f",
    _BOOL: "?",
    _UINT64: "Q",
    _INT64: "q",
    _FLOAT64: "d",
}
_VALUE_TYPE_NAMES: dict[int, str] = {
    _UINT8: "uint8",
    _INT8: "int8",
    _UINT16: "uint16",
    _INT16: "int16",
    _UINT32: "uint32",
    _INT32: "int32",
    _FLOAT32: "float32",
    _BOOL: "bool",
    _STRING: "string",
    _ARRAY: "array",
    _UINT64: "uint64",
    _INT64: "int64",
    _FLOAT64: "float64",
}

_SCALAR_STRUCTS = {value_type: struct.Struct("<" + fmt) for value_type, fmt in _SCALAR_FORMATS.items()}

_QK_K = 256

# ggml tensor types: id -> (name, elements per block, bytes per block), as in ggml.h /
# gguf-py's GGML_QUANT_SIZES. Ids 4, 5 and 31-33, 36-38 were retired and never appear in files.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 4 + 4 + 32),
    10: ("Q2_K", _QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    11: ("Q3_K", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    12: ("Q4_K", _QK_K, 2 + 2 + _QK_K // 2 + 12),
    13: ("Q5_K", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    14: ("Q6_K", _QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    15: ("Q8_K", _QK_K, 4 + _QK_K + _QK_K // 8),
    16: ("IQ2_XXS", _QK_K, 2 + _QK_K // 4),
    17: ("IQ2_XS", _QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    18: ("IQ3_XXS", _QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    19: ("IQ1_S", _QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    22: ("IQ2_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    23: ("IQ4_XS", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", _QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", _QK_K, 2 + 4 * 13),
    35: ("TQ2_0", _QK_K, 2 + 64),
    39: ("MXFP4", 32, 1 + 16),
}

# llama.cpp's enum llama_ftype (general.file_type), without the "MOSTLY_" prefix.
LLAMA_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}


def ggml_type_name(type_id: int) -> str:
    known = GGML_TYPES.get(type_id)
    return known[0] if known else f"TYPE_{type_id}"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFArray:
    """How an array value appears in `GGUFInfo.metadata`: its element type, its length, and its
    values when it is short (at most SMALL_ARRAY_LIMIT scalars or strings), else None."""

    element_type: str
    length: int
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: the fastest-varying dimension first
    type_id: int  # ggml_type
    offset: int  # from the start of the tensor data section

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.type_id)

    @property
    def element_count(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int | None:
        """Bytes of data, or None for a tensor type this module does not know."""
        known = GGML_TYPES.get(self.type_id)
        if known is None:
            return None
        _, block_elements, block_bytes = known
        return -(-self.element_count // block_elements) * block_bytes


@dataclass
class GGUFInfo:
    """What a GGUF file says about its model. Missing metadata is None, never a guess."""

    path: Path
    file_size: int
    version: int
    architecture: str | None
    name: str | None
    parameter_count: int
    """Sum over tensors of the product of their dimensions (of this file only, for split models)."""
    tensor_count: int
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    """Transformer layers."""
    head_count: int | None
    head_count_kv: int | None
    """KV heads (grouped-query attention); llama.cpp's default, head_count, when the key is absent.
    Where the file lists a count per layer, the largest (the safe figure for memory estimates)."""
    key_length: int | None
    value_length: int | None
    vocab_size: int | None
    file_type: int | None
    """general.file_type, llama.cpp's llama_ftype number."""
    quantization: str
    """The file type's name ("Q4_K_M", "Q8_0", "F16", ...); the dominant tensor type when the
    file does not say; "unknown" when it has neither."""
    dominant_tensor_type: str | None
    """The tensor type holding the most bytes."""
    bytes_by_tensor_type: dict[str, int]
    chat_template: str | None
    metadata: dict[str, Any]
    """Every key: scalars and strings as read, arrays as GGUFArray summaries."""
    tensors: tuple[TensorInfo, ...] = field(default=(), repr=False)

    @property
    def head_dim(self) -> int | None:
        """Per-head key width: `{arch}.attention.key_length`, else embedding_length / head_count."""
        if self.key_length:
            return self.key_length
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None

    def kv_bytes_per_token(self, type_bytes: float = 2) -> float:
        """KV-cache bytes one token of context costs: 2 (K and V) * layers * KV heads * head_dim
        * type_bytes, with type_bytes 2 for an f16 cache (about 1.06 for q8_0).

        Where keys and values differ in width (key_length != value_length) the two are added
        instead of doubling one. Raises GGUFError if the file lacks the numbers needed.
        """
        key_width = self.head_dim
        value_width = self.value_length or key_width
        if not (self.block_count and self.head_count_kv and key_width and value_width):
            raise GGUFError(
                f"{self.path}: cannot estimate the KV cache: the metadata lacks the layer count, "
                "the (KV) head count or the embedding length"
            )
        return self.block_count * self.head_count_kv * (key_width + value_width) * type_bytes

    def as_architecture(self) -> Architecture | None:
        """The catalog's Architecture for the fit check, or None if a number is missing."""
        from swarm_lsp.models.catalog import Architecture  # catalog may import discovery -> us

        layers, embedding, heads = self.block_count, self.embedding_length, self.head_count
        kv_heads, head_dim, vocab = self.head_count_kv, self.head_dim, self.vocab_size
        if not layers or not embedding or not heads or not kv_heads or not head_dim or not vocab:
            return None
        return Architecture(layers, embedding, heads, kv_heads, head_dim, vocab)


# --- parsing ----------------------------------------------------------------------------------

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class _Cursor:
    """Bounds-checked little-endian reads over a buffer; every overrun is a GGUFError."""

    def __init__(self, buffer: Any, path: Path) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.path = path
        self.pos = 0
        self.context = "the header"  # what is being read, for error messages

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: not a readable GGUF file: {problem} (while reading {self.context})")

    def require(self, nbytes: int, what: str) -> None:
        if nbytes > self.size - self.pos:
            raise self.fail(
                f"{what} of {nbytes} bytes at offset {self.pos} runs past the end of the file "
                f"({self.size} bytes); the file is truncated or corrupt"
            )

    def u32(self) -> int:
        self.require(4, "a u32")
        (value,) = _U32.unpack_from(self.buffer, self.pos)
        self.pos += 4
        return value

    def u64(self) -> int:
        self.require(8, "a u64")
        (value,) = _U64.unpack_from(self.buffer, self.pos)
        self.pos += 8
        return value

    def string(self) -> str:
        length = self.u64()
        self.require(length, "a string")
        raw = self.buffer[self.pos : self.pos + length]
        self.pos += length
        return bytes(raw).decode("utf-8", errors="replace")

    def scalar(self, value_type: int) -> Any:
        scalar = _SCALAR_STRUCTS[value_type]
        self.require(scalar.size, f"a {_VALUE_TYPE_NAMES[value_type]}")
        (value,) = scalar.unpack_from(self.buffer, self.pos)
        self.pos += scalar.size
        return value

    def scalars(self, value_type: int, count: int) -> tuple[Any, ...]:
        nbytes = count * _SCALAR_STRUCTS[value_type].size
        self.require(nbytes, f"an array of {count} {_VALUE_TYPE_NAMES[value_type]}")
        values = struct.unpack_from(f"<{count}{_SCALAR_FORMATS[value_type]}", self.buffer, self.pos)
        self.pos += nbytes
        return values

    def skip_strings(self, count: int) -> None:
        """Step over `count` strings without decoding them: the tokenizer's big arrays."""
        # A tight loop on locals: this runs once per vocabulary entry (up to ~300k times).
        buffer, pos, size, unpack = self.buffer, self.pos, self.size, _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.require(8, "a string length")
            pos += 8 + unpack(buffer, pos)[0]
            if pos > size:
                self.pos = size
                raise self.fail(f"a string in an array of {count} runs past the end of the file")
        self.pos = pos


def _read_value(cursor: _Cursor, value_type: int) -> Any:
    if value_type == _STRING:
        return cursor.string()
    if value_type == _ARRAY:
        return _read_array(cursor)
    if value_type in _SCALAR_FORMATS:
        return cursor.scalar(value_type)
    raise cursor.fail(f"unknown metadata value type {value_type}")


def _read_array(cursor: _Cursor) -> GGUFArray:
    element_type = cursor.u32()
    length = cursor.u64()
    type_name = _VALUE_TYPE_NAMES.get(element_type)
    if type_name is None:
        raise cursor.fail(f"unknown array element type {element_type}")
    if element_type in _SCALAR_FORMATS:
        if length <= SMALL_ARRAY_LIMIT:
            return GGUFArray(type_name, length, cursor.scalars(element_type, length))
        nbytes = length * _SCALAR_STRUCTS[element_type].size
        cursor.require(nbytes, f"an array of {length} {type_name}")
        cursor.pos += nbytes
        return GGUFArray(type_name, length)
    if element_type == _STRING:
        if length <= SMALL_ARRAY_LIMIT:
            return GGUFArray(type_name, length, tuple(cursor.string() for _ in range(length)))
        cursor.require(length * 8, f"an array of {length} strings")  # each is at least its length
        cursor.skip_strings(length)
        return GGUFArray(type_name, length)
    # An array of arrays: each nested header is at least 12 bytes, which bounds `length`.
    cursor.require(length * 12, f"an array of {length} arrays")
    for _ in range(length):
        _read_array(cursor)
    return GGUFArray(type_name, length)


def _read_header(cursor: _Cursor) -> tuple[int, int, int]:
    """(version, tensor count, metadata count), after checking magic and version."""
    if cursor.size < 4 or bytes(cursor.buffer[:4]) != GGUF_MAGIC:
        found = bytes(cursor.buffer[:4])
        raise GGUFError(f"{cursor.path}: not a GGUF file: it starts with {found!r}, not {GGUF_MAGIC!r}")
    cursor.pos = 4
    version = cursor.u32()
    if version not in SUPPORTED_VERSIONS:
        if int.from_bytes(_U32.pack(version), "big") in SUPPORTED_VERSIONS:
            raise GGUFError(
                f"{cursor.path}: big-endian GGUF files are not supported; use a little-endian one"
            )
        raise GGUFError(
            f"{cursor.path}: unsupported GGUF version {version}; versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} are supported (re-convert the model with a "
            "recent llama.cpp)"
        )
    tensor_count = cursor.u64()
    metadata_count = cursor.u64()
    # Each metadata entry takes at least 12 bytes and each tensor info at least 24, so a count the
    # file cannot hold is corruption, caught here before any loop runs on it.
    remaining = cursor.size - cursor.pos
    if metadata_count * 12 + tensor_count * 24 > remaining:
        raise cursor.fail(
            f"the header claims {metadata_count} metadata entries and {tensor_count} tensors, "
            f"more than the {remaining} remaining bytes can hold; the file is truncated or corrupt"
        )
    return version, tensor_count, metadata_count


def _read_metadata(cursor: _Cursor, count: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for index in range(count):
        cursor.context = f"metadata entry {index + 1} of {count}"
        key = cursor.string()
        cursor.context = f"metadata entry {index + 1} of {count} ({key!r})"
        metadata[key] = _read_value(cursor, cursor.u32())
    return metadata


def _read_tensor_infos(cursor: _Cursor, count: int) -> list[TensorInfo]:
    tensors = []
    for index in range(count):
        cursor.context = f"tensor info {index + 1} of {count}"
        name = cursor.string()
        cursor.context = f"tensor info {index + 1} of {count} ({name!r})"
        n_dims = cursor.u32()
        if n_dims > MAX_DIMS:
            raise cursor.fail(f"a tensor with {n_dims} dimensions (at most {MAX_DIMS} are possible)")
        shape = tuple(cursor.u64() for _ in range(n_dims))
        type_id = cursor.u32()
        tensors.append(TensorInfo(name, shape, type_id, cursor.u64()))
    return tensors


def _check_tensor_data(cursor: _Cursor, tensors: list[TensorInfo], alignment: int) -> None:
    """Fail on a file whose tensor data is cut short, as a partial download is."""
    data_start = -(-cursor.pos // alignment) * alignment
    data_end = max(
        (tensor.offset + nbytes for tensor in tensors if (nbytes := tensor.nbytes) is not None),
        default=0,
    )
    if data_start + data_end > cursor.size:
        cursor.context = "the tensor data"
        raise cursor.fail(
            f"the tensors need {data_start + data_end} bytes but the file has {cursor.size}; "
            "it is truncated (an unfinished download?)"
        )


def _parse(buffer: Any, path: Path) -> GGUFInfo:
    cursor = _Cursor(buffer, path)
    version, tensor_count, metadata_count = _read_header(cursor)
    metadata = _read_metadata(cursor, metadata_count)
    tensors = _read_tensor_infos(cursor, tensor_count)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise cursor.fail(f"general.alignment is {alignment!r}, not a positive integer")
    _check_tensor_data(cursor, tensors, alignment)
    return _summarise(path, cursor.size, version, metadata, tensors)


# --- summary ----------------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
    """An integer metadata value; a per-layer array gives its largest entry."""
    if isinstance(value, GGUFArray):
        numbers = [v for v in value.values or () if isinstance(v, int) and not isinstance(v, bool)]
        return max(numbers) if numbers else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bytes_by_type(tensors: list[TensorInfo]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for tensor in tensors:
        nbytes = tensor.nbytes
        if nbytes is not None:
            totals[tensor.type_name] = totals.get(tensor.type_name, 0) + nbytes
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _vocab_size(
    metadata: dict[str, Any], arch_key: Callable[[str], Any], tensors: list[TensorInfo]
) -> int | None:
    tokens = metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, GGUFArray):
        return tokens.length
    from_key = _as_int(arch_key("vocab_size"))
    if from_key:
        return from_key
    # Last resort: the token embedding matrix is (embedding, vocab) in GGUF order.
    embedding = next((t for t in tensors if t.name == "token_embd.weight" and len(t.shape) == 2), None)
    return embedding.shape[1] if embedding else None


def _summarise(
    path: Path, file_size: int, version: int, metadata: dict[str, Any], tensors: list[TensorInfo]
) -> GGUFInfo:
    architecture = _as_str(metadata.get("general.architecture"))

    def arch_key(suffix: str) -> Any:
        return metadata.get(f"{architecture}.{suffix}") if architecture else None

    head_count = _as_int(arch_key("attention.head_count"))
    head_count_kv = _as_int(arch_key("attention.head_count_kv")) or head_count
    bytes_by_type = _bytes_by_type(tensors)
    dominant = next(iter(bytes_by_type), None)
    file_type = _as_int(metadata.get("general.file_type"))
    # A file type llama.cpp does not name (1024 is "guessed") falls back to the tensors' majority.
    named_type = LLAMA_FILE_TYPES.get(file_type) if file_type is not None else None
    return GGUFInfo(
        path=path,
        file_size=file_size,
        version=version,
        architecture=architecture,
        name=_as_str(metadata.get("general.name")),
        parameter_count=sum(tensor.element_count for tensor in tensors),
        tensor_count=len(tensors),
        context_length=_as_int(arch_key("context_length")),
        embedding_length=_as_int(arch_key("embedding_length")),
        block_count=_as_int(arch_key("block_count")),
        head_count=head_count,
        head_count_kv=head_count_kv,
        key_length=_as_int(arch_key("attention.key_length")),
        value_length=_as_int(arch_key("attention.value_length")),
        vocab_size=_vocab_size(metadata, arch_key, tensors),
        file_type=file_type,
        quantization=named_type or dominant or "unknown",
        dominant_tensor_type=dominant,
        bytes_by_tensor_type=bytes_by_type,
        chat_template=_as_str(metadata.get("tokenizer.chat_template")),
        metadata=metadata,
        tensors=tuple(tensors),
    )


# --- entry point ------------------------------------------------------------------------------


def read_gguf(path: str | Path) -> GGUFInfo:
    """Read a GGUF file's header, metadata and tensor table (not its weights).

    Raises GGUFError, naming the path and the problem, for a missing, empty, non-GGUF, truncated,
    corrupt or unsupported-version file.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            if size == 0:
                raise GGUFError(f"{path}: not a GGUF file: the file is empty")
            # mmap: the kernel pages in only the header bytes we touch, never the weights.
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _parse(mapped, path)
    except GGUFError:
        raise
    except (OSError, ValueError) as error:
        raise GGUFError(f"{path}: cannot read the file: {error}") from error
