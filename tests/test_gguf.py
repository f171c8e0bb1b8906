from __future__ import annotations

import contextlib
import random
import struct
import time
from pathlib import Path

import pytest
from gguf_writer import (
    ARRAY,
    BOOL,
    F16,
    F32,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    Q4_K,
    Q6_K,
    Q8_0,
    STRING,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    Tensor,
    Typed,
    gguf_bytes,
    llama_metadata,
    pack_kv,
    pack_string,
    tiny_tensors,
    write_gguf,
)

from swarm_lsp.models.base import ModelError
from swarm_lsp.models.gguf import SMALL_ARRAY_LIMIT, GGUFArray, GGUFError, read_gguf

# --- the bundled model --------------------------------------------------------------------------


def test_bundled_model_metadata(bundled_gguf: Path) -> None:
    info = read_gguf(bundled_gguf)

    assert info.version == 3
    assert info.file_size == bundled_gguf.stat().st_size
    assert info.architecture == "llama"
    assert info.block_count == 30
    assert info.embedding_length == 576
    assert info.head_count == 9
    assert info.head_count_kv == 3
    assert info.head_dim == 64
    assert info.vocab_size == 49152
    assert info.context_length == 8192
    assert info.file_type == 3
    assert info.quantization == "Q4_1"
    assert info.dominant_tensor_type == "Q4_1"
    assert 130e6 < info.parameter_count < 140e6
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert info.kv_bytes_per_token() == 2 * 30 * 3 * 64 * 2


def test_bundled_model_summarises_big_arrays(bundled_gguf: Path) -> None:
    tokens = read_gguf(bundled_gguf).metadata["tokenizer.ggml.tokens"]

    assert tokens == GGUFArray("string", 49152, None)


def test_bundled_model_matches_the_catalog(bundled_gguf: Path) -> None:
    from swarm_lsp.models.catalog import find_entry

    entry = find_entry("smollm2-135m-instruct")
    assert entry is not None
    assert read_gguf(bundled_gguf).as_architecture() == entry.arch


def test_reading_the_bundled_model_is_fast(bundled_gguf: Path) -> None:
    read_gguf(bundled_gguf)  # warm the page cache
    started = time.perf_counter()
    for _ in range(5):
        read_gguf(bundled_gguf)
    per_read = (time.perf_counter() - started) / 5

    assert per_read < 0.25, f"reading the header took {per_read * 1000:.0f} ms"


# --- synthetic files ----------------------------------------------------------------------------

EVERY_TYPE = {
    "general.architecture": "llama",
    "general.name": "Every Type",
    "test.uint8": Typed(UINT8, 200),
    "test.int8": Typed(INT8, -100),
    "test.uint16": Typed(UINT16, 60000),
    "test.int16": Typed(INT16, -30000),
    "test.uint32": Typed(UINT32, 4_000_000_000),
    "test.int32": Typed(INT32, -2_000_000_000),
    "test.float32": Typed(FLOAT32, 0.5),
    "test.bool": Typed(BOOL, True),
    "test.string": Typed(STRING, "héllo"),
    "test.uint64": Typed(UINT64, 2**63 + 1),
    "test.int64": Typed(INT64, -(2**62)),
    "test.float64": Typed(FLOAT64, 1.25),
    "test.int_array": Typed(ARRAY, [1, -2, 3], INT32),
    "test.string_array": Typed(ARRAY, ["a", "bc"], STRING),
    "test.nested_array": Typed(ARRAY, [[1, 2], [3]], ARRAY),
    "test.empty_array": Typed(ARRAY, [], FLOAT32),
    "test.long_array": Typed(ARRAY, list(range(SMALL_ARRAY_LIMIT + 1)), UINT16),
    "llama.block_count": 2,
}


def test_every_value_type_round_trips(tmp_path: Path) -> None:
    tensors = [Tensor("a.weight", (32, 4), F32), Tensor("b.weight", (64, 3), Q8_0)]
    path = tmp_path / "every.gguf"
    path.write_bytes(gguf_bytes(EVERY_TYPE, tensors))

    info = read_gguf(path)
    meta = info.metadata

    assert meta["test.uint8"] == 200
    assert meta["test.int8"] == -100
    assert meta["test.uint16"] == 60000
    assert meta["test.int16"] == -30000
    assert meta["test.uint32"] == 4_000_000_000
    assert meta["test.int32"] == -2_000_000_000
    assert meta["test.float32"] == 0.5
    assert meta["test.bool"] is True
    assert meta["test.string"] == "héllo"
    assert meta["test.uint64"] == 2**63 + 1
    assert meta["test.int64"] == -(2**62)
    assert meta["test.float64"] == 1.25
    assert meta["test.int_array"] == GGUFArray("int32", 3, (1, -2, 3))
    assert meta["test.string_array"] == GGUFArray("string", 2, ("a", "bc"))
    assert meta["test.nested_array"] == GGUFArray("array", 2, None)
    assert meta["test.empty_array"] == GGUFArray("float32", 0, ())
    assert meta["test.long_array"] == GGUFArray("uint16", SMALL_ARRAY_LIMIT + 1, None)
    assert info.name == "Every Type"
    assert info.block_count == 2
    assert info.tensor_count == 2
    assert info.parameter_count == 32 * 4 + 64 * 3
    assert [t.name for t in info.tensors] == ["a.weight", "b.weight"]
    assert info.tensors[1].shape == (64, 3)
    assert info.bytes_by_tensor_type == {"F32": 32 * 4 * 4, "Q8_0": 6 * 34}


@pytest.mark.parametrize("version", [2, 3])
def test_llama_like_file(tmp_path: Path, version: int) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes(llama_metadata(vocab=300), tiny_tensors(vocab=300), version=version))

    info = read_gguf(path)

    assert info.version == version
    assert (info.block_count, info.embedding_length, info.head_count, info.head_count_kv) == (2, 64, 4, 2)
    assert info.head_dim == 16
    assert info.vocab_size == 300  # from the tokens array, whose values are not kept
    assert info.metadata["tokenizer.ggml.tokens"].values is None
    assert info.quantization == "Q8_0"  # general.file_type 7
    assert info.chat_template is not None
    assert info.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 2
    assert info.kv_bytes_per_token(type_bytes=1) == 2 * 2 * 2 * 16


@pytest.mark.parametrize(
    ("file_type", "expected"),
    [(15, "Q4_K_M"), (1, "F16"), (0, "F32"), (32, "BF16"), (18, "Q6_K"), (1024, "Q4_K"), (None, "Q4_K")],
)
def test_quantization_name(tmp_path: Path, file_type: int | None, expected: str) -> None:
    tensors = [Tensor("big.weight", (256, 8), Q4_K), Tensor("small.weight", (256, 1), Q6_K)]
    path = tmp_path / "q.gguf"
    path.write_bytes(gguf_bytes(llama_metadata(file_type=file_type, vocab=4), tensors))

    info = read_gguf(path)

    assert info.quantization == expected
    assert info.dominant_tensor_type == "Q4_K"


def test_dominant_type_counts_bytes_not_tensors(tmp_path: Path) -> None:
    tensors = [Tensor(f"n{i}.weight", (32,), F32) for i in range(5)] + [Tensor("w.weight", (4096,), F16)]
    path = tmp_path / "d.gguf"
    path.write_bytes(gguf_bytes(llama_metadata(file_type=None, vocab=4), tensors))

    assert read_gguf(path).quantization == "F16"


def test_explicit_key_length_and_per_layer_kv_heads(tmp_path: Path) -> None:
    metadata = llama_metadata(vocab=4) | {
        "llama.attention.key_length": 128,
        "llama.attention.value_length": 64,
        "llama.attention.head_count_kv": Typed(ARRAY, [2, 0], INT32),
    }
    path = tmp_path / "k.gguf"
    path.write_bytes(gguf_bytes(metadata, tiny_tensors(vocab=4)))

    info = read_gguf(path)

    assert info.head_dim == 128
    assert info.head_count_kv == 2  # the largest per-layer figure: safe for memory estimates
    assert info.kv_bytes_per_token() == 2 * 2 * (128 + 64) * 2


def test_missing_metadata_is_none_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "bare.gguf"
    path.write_bytes(gguf_bytes({}, [Tensor("x", (4, 4), F32)]))

    info = read_gguf(path)

    assert info.architecture is None
    assert info.block_count is None
    assert info.head_dim is None
    assert info.chat_template is None
    assert info.vocab_size is None
    assert info.quantization == "F32"
    assert info.as_architecture() is None
    with pytest.raises(GGUFError, match="KV cache"):
        info.kv_bytes_per_token()


def test_vocab_size_falls_back_to_the_key_then_the_embedding(tmp_path: Path) -> None:
    base = {k: v for k, v in llama_metadata().items() if k != "tokenizer.ggml.tokens"}
    with_key = tmp_path / "key.gguf"
    with_key.write_bytes(gguf_bytes(base | {"llama.vocab_size": 1234}, tiny_tensors()))
    without_key = tmp_path / "embd.gguf"
    without_key.write_bytes(gguf_bytes(base, tiny_tensors(embedding=64, vocab=77)))

    assert read_gguf(with_key).vocab_size == 1234
    assert read_gguf(without_key).vocab_size == 77


def test_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    metadata = llama_metadata(vocab=4) | {"general.alignment": 64}
    path.write_bytes(gguf_bytes(metadata, tiny_tensors(vocab=4), alignment=64))

    assert read_gguf(path).metadata["general.alignment"] == 64


# --- broken files -------------------------------------------------------------------------------


def _valid(tmp_path: Path) -> bytes:
    """A small valid file: a short vocabulary keeps the byte-by-byte tests quick."""
    metadata, tensors = llama_metadata(vocab=8), tiny_tensors(vocab=8)
    return write_gguf(tmp_path / "valid.gguf", metadata, tensors).read_bytes()


def _expect_error(path: Path, data: bytes, match: str) -> GGUFError:
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=match) as caught:
        read_gguf(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_gguf_error_is_a_model_error() -> None:
    assert issubclass(GGUFError, ModelError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="cannot read"):
        read_gguf(tmp_path / "nope.gguf")


def test_empty_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "empty.gguf", b"", "empty")


def test_wrong_magic(tmp_path: Path) -> None:
    _expect_error(tmp_path / "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "not a GGUF file")


def test_tiny_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "t.gguf", b"GG", "not a GGUF file")


@pytest.mark.parametrize("version", [1, 4, 99])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    data = bytearray(_valid(tmp_path))
    data[4:8] = struct.pack("<I", version)
    _expect_error(tmp_path / "v.gguf", bytes(data), f"unsupported GGUF version {version}")


def test_big_endian_file(tmp_path: Path) -> None:
    data = bytearray(_valid(tmp_path))
    data[4:8] = struct.pack(">I", 3)
    _expect_error(tmp_path / "be.gguf", bytes(data), "big-endian")


def test_truncated_mid_metadata(tmp_path: Path) -> None:
    data = _valid(tmp_path)
    cut = data.index(b"tokenizer.chat_template") + 10
    error = _expect_error(tmp_path / "cut.gguf", data[:cut], "truncated")
    assert "metadata entry" in str(error)


def test_truncated_tensor_data_is_reported(tmp_path: Path) -> None:
    data = _valid(tmp_path)
    _expect_error(tmp_path / "partial.gguf", data[:-100], "unfinished download")


def test_absurd_string_length(tmp_path: Path) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    data = header + struct.pack("<Q", 2**62) + b"general.name"
    _expect_error(tmp_path / "huge.gguf", data, "runs past the end")


def test_absurd_array_length(tmp_path: Path) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    data = header + pack_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 2**60)
    _expect_error(tmp_path / "huge-array.gguf", data, "array of")


def test_absurd_entry_counts(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40) + b"\0" * 64
    _expect_error(tmp_path / "counts.gguf", data, "claims")


def test_unknown_value_type(tmp_path: Path) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    data = header + pack_string("x") + struct.pack("<I", 77) + b"\0" * 16
    _expect_error(tmp_path / "type.gguf", data, "unknown metadata value type 77")


def test_too_many_dimensions(tmp_path: Path) -> None:
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + pack_kv("general.architecture", "llama")
    data = header + pack_string("t") + struct.pack("<I", 9) + b"\0" * 128
    _expect_error(tmp_path / "dims.gguf", data, "9 dimensions")


def test_every_prefix_of_a_valid_file_fails_cleanly(tmp_path: Path) -> None:
    data = _valid(tmp_path)
    path = tmp_path / "prefix.gguf"
    for length in range(len(data) - 1):
        path.write_bytes(data[:length])
        with pytest.raises(GGUFError):
            read_gguf(path)


def test_corrupted_bytes_never_raise_anything_but_gguf_error(tmp_path: Path) -> None:
    data = _valid(tmp_path)
    header_end = data.index(b"output_norm.weight") + 40
    path = tmp_path / "fuzz.gguf"
    rng = random.Random(1234)
    for _ in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(4, header_end)] = rng.randrange(256)
        path.write_bytes(bytes(corrupt))
        with contextlib.suppress(GGUFError):  # any other exception fails the test
            read_gguf(path)
