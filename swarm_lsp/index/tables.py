"""The index's tables: their names, their Arrow schemas and the rows a batch of parsed files becomes.

Plain pyarrow; the store (store.py) decides when and how these rows reach LanceDB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from swarm_lsp.index.records import Chunk, ParsedFile
from swarm_lsp.index.text_query import search_text

FILES, SYMBOLS, CHUNKS, REFERENCES, EMBEDDING_CACHE = (
    "files",
    "symbols",
    "chunks",
    "references",
    "embedding_cache",
)
DATA_TABLES = (FILES, SYMBOLS, CHUNKS, REFERENCES)
FTS_COLUMN = "search_text"
VECTOR_COLUMN = "vector"

_LINES = {"start_line": pa.int32(), "end_line": pa.int32(), "line": pa.int32()}


def _schema(columns: str, **types: pa.DataType) -> pa.Schema:
    """A schema of these space-separated columns: line numbers int32, `types` as given, the rest strings."""
    return pa.schema([(name, types.get(name, _LINES.get(name, pa.string()))) for name in columns.split()])


FILES_SCHEMA = _schema(
    "path language size mtime_ns sha256 outline indexed_at",
    size=pa.int64(),
    mtime_ns=pa.int64(),
    indexed_at=pa.float64(),
)
SYMBOLS_SCHEMA = _schema("id path name qualified_name kind parent start_line end_line signature docstring")
_REFERENCES_SCHEMA = _schema("id path name line kind")
# Vectors as raw float32 bytes: one table holds every embedder's vectors whatever their dimension.
CACHE_SCHEMA = _schema("key embedder_id text_hash dimension vector", dimension=pa.int32(), vector=pa.binary())
_CHUNK_COLUMNS = _schema(
    f"chunk_id path start_line end_line symbol kind language text text_hash {FTS_COLUMN}"
)


def _chunks_schema(dimension: int | None) -> pa.Schema:
    """The chunks table: with a fixed-size vector column when there is an embedder."""
    schema = _CHUNK_COLUMNS
    if dimension is not None:
        schema = schema.append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dimension)))
    return schema.append(pa.field("has_vector", pa.bool_()))


def data_schemas(dimension: int | None) -> dict[str, pa.Schema]:
    return {
        FILES: FILES_SCHEMA,
        SYMBOLS: SYMBOLS_SCHEMA,
        CHUNKS: _chunks_schema(dimension),
        REFERENCES: _REFERENCES_SCHEMA,
    }


# ------------------------------------------------------------------- row building


def _table(schema: pa.Schema, records: Sequence[object], **computed: Any) -> pa.Table:
    """`records` as rows of `schema`: each column is the attribute of its name, unless `computed` gives it."""
    columns = {
        field.name: computed[field.name]
        if field.name in computed
        else [getattr(record, field.name) for record in records]
        for field in schema
    }
    return pa.table(columns, schema=schema)


def file_table(batch: list[ParsedFile], now: float) -> pa.Table:
    return _table(FILES_SCHEMA, [item.record for item in batch], indexed_at=[now] * len(batch))


def check_paths(batch: list[ParsedFile]) -> None:
    """Rows are replaced by their file's path, so a row under another path would never be replaced."""
    for item in batch:
        for row in (*item.symbols, *item.chunks, *item.references):
            if row.path != item.record.path:
                raise ValueError(f"{row!r} says its file is {row.path}, but it came with {item.record.path}")


def symbol_table(batch: list[ParsedFile]) -> pa.Table:
    symbols = {
        _key(symbol.path, symbol.qualified_name, symbol.kind, symbol.start_line, symbol.end_line): symbol
        for item in batch
        for symbol in item.symbols
    }
    return _table(SYMBOLS_SCHEMA, list(symbols.values()), id=list(symbols))


def reference_table(batch: list[ParsedFile]) -> pa.Table:
    references = {
        _key(ref.path, ref.name, ref.line, ref.kind): ref for item in batch for ref in item.references
    }
    return _table(_REFERENCES_SCHEMA, list(references.values()), id=list(references))


def chunk_table(chunks: list[Chunk], vectors: Mapping[str, np.ndarray], dimension: int | None) -> pa.Table:
    computed: dict[str, Any] = {
        FTS_COLUMN: [search_text(chunk) for chunk in chunks],
        "has_vector": [chunk.chunk_id in vectors for chunk in chunks],
    }
    if dimension is not None:
        computed[VECTOR_COLUMN] = vector_array([vectors.get(chunk.chunk_id) for chunk in chunks], dimension)
    return _table(_chunks_schema(dimension), chunks, **computed)


def cache_table(embedder_id: str, vectors: Mapping[str, np.ndarray]) -> pa.Table:
    hashes = list(vectors)
    columns = {
        "key": [cache_key(embedder_id, text_hash) for text_hash in hashes],
        "embedder_id": [embedder_id] * len(hashes),
        "text_hash": hashes,
        "dimension": [len(vectors[text_hash]) for text_hash in hashes],
        "vector": [vectors[text_hash].astype("<f4").tobytes() for text_hash in hashes],
    }
    return pa.table(columns, schema=CACHE_SCHEMA)


def vector_array(vectors: Sequence[np.ndarray | None], dimension: int) -> pa.Array:
    values = np.zeros((len(vectors), dimension), dtype=np.float32)
    mask = np.ones(len(vectors), dtype=bool)
    for i, vector in enumerate(vectors):
        if vector is not None:
            values[i] = vector
            mask[i] = False
    flat = pa.array(values.reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dimension, mask=pa.array(mask))


def as_vector(value: Any, dimension: int) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dimension:
        raise ValueError(f"expected a vector of {dimension} numbers, got {vector.shape[0]}")
    if not np.all(np.isfinite(vector)):
        raise ValueError("the vector contains NaN or infinite values")
    return vector


def _key(*parts: object) -> str:
    return hashlib.sha256(
        "\0".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
    ).hexdigest()[:32]


def cache_key(embedder_id: str, text_hash: str) -> str:
    return f"{embedder_id}|{text_hash}"  # unambiguous: the hash is a fixed-length hex suffix
