"""What the full-text index sees for a chunk and what it is asked for a query.

Identifiers are split for the index: `search_text` holds the path, the symbol and the text, plus
camelCase words split ("getJson" -> "get Json") and snake_case words joined ("get_json" ->
"getjson"); the tokenizer itself splits on "_" and lowercases, so "get json", "get_json" and
"getJson" find each other. A query gets the same expansions (`fts_query`).
"""

from __future__ import annotations

import re

from swarm_lsp.index.records import Chunk

_CAMEL_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Only compound identifiers need expanding; matching just those keeps this at C speed on plain words.
_SNAKE_CASE = re.compile(r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]+_[A-Za-z0-9])[A-Za-z0-9]+(?:_+[A-Za-z0-9]+)+")
_CAMEL_CASE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]*(?:[a-z0-9][A-Z]|[A-Z][A-Z][a-z])[A-Za-z0-9]*")


def split_identifier(identifier: str) -> list[str]:
    """The words of an identifier: "parseHTTPRequest" -> parse, HTTP, Request; "get_json" -> get, json."""
    return [part for piece in identifier.split("_") for part in _CAMEL_PART.findall(piece)]


def _identifier_expansions(text: str) -> list[str]:
    # get_json -> getjson, to match a query "getJson" (the tokenizer already splits on "_")
    joined = [word.replace("_", "").lower() for word in dict.fromkeys(_SNAKE_CASE.findall(text))]
    # getJson -> get Json, to match "get json" and "get_json"
    split = [" ".join(_CAMEL_PART.findall(word)) for word in dict.fromkeys(_CAMEL_CASE.findall(text))]
    return joined + split


def search_text(chunk: Chunk) -> str:
    """What the full-text index sees for a chunk: path, symbol, text and the identifier expansions."""
    head = f"{chunk.path} {chunk.symbol or ''}"
    expansions = _identifier_expansions(f"{head}\n{chunk.text}")
    return f"{head}\n{chunk.text}\n{' '.join(expansions)}"


def fts_query(query: str) -> str:
    query = query.strip()
    if not query:
        return ""
    expansions = _identifier_expansions(query)
    return f"{query} {' '.join(expansions)}" if expansions else query
