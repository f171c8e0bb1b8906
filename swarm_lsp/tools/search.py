"""Index tools: search_code, find_symbol, get_outline, repo_map, index_status (all read).

They answer from the workspace index (kept fresh by the watcher) and wait for the first sync when
a server has just started. Results outside the caller's roots, and secret files, are left out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from swarm_lsp.tools.env import ToolEnv
from swarm_lsp.tools.registry import Output, Plan, Tier, Tool, ToolError
from swarm_lsp.tools.sandbox import SafePath

HIT_LINES = 30
"""search_code shows at most this many lines of each hit (the structured result has them all)."""


def _index_plan(
    description: str, run: Any, cache_key: tuple[Any, ...], depends_on: tuple[Path, ...] = ()
) -> Plan:
    """A read of the index: cached by `cache_key` until the index (or a file it `depends_on`) changes."""
    return Plan(Tier.READ, description, run, cache_key=cache_key, depends_on=depends_on, index_backed=True)


def _scope(env: ToolEnv) -> tuple[Any, ...]:
    """What decides which index results a caller may see: part of every index tool's cache key."""
    return (env.sandbox.roots, env.sandbox.allow_secrets)


def _visible_rel(env: ToolEnv, rel: str) -> SafePath | None:
    return env.sandbox.visible(env.workspace.root / rel)


def _index_rel(env: ToolEnv, raw: str, argument: str = "path") -> tuple[SafePath, str]:
    safe = env.sandbox.resolve(raw, argument=argument)
    rel = env.index_rel(safe)
    if rel is None or rel == "":
        raise ToolError(
            f"{safe.shown} is not a file in the indexed workspace ({env.workspace.root}); the index tools "
            "only know files inside it"
        )
    return safe, rel


# ------------------------------------------------------------------------------------ search_code


def _prepare_search_code(env: ToolEnv, args: dict[str, Any]) -> Plan:
    query: str = args["query"].strip()
    if not query:
        raise ToolError("the query is empty; give some words or an identifier to look for")
    k: int = args.get("k", 10)
    mode: str = args.get("mode", "hybrid")

    async def run(progress: Any) -> Output:
        await env.index_ready()
        # Ask for more than k: hits in hidden files are dropped afterwards.
        hits = await asyncio.to_thread(env.workspace.search, query, k + 10, mode)
        shown = []
        for hit in hits:
            safe = _visible_rel(env, hit.path)
            if safe is None:
                continue
            shown.append(hit.to_dict() | {"path": safe.shown})
            if len(shown) == k:
                break
        if not shown:
            return Output(f"no results for {query!r}", {"query": query, "hits": []})
        blocks = []
        for hit in shown:
            symbol = f"  {hit['symbol']}" if hit["symbol"] else ""
            lines = hit["text"].splitlines()
            more = f"\n    ... ({len(lines) - HIT_LINES} more lines)" if len(lines) > HIT_LINES else ""
            body = "\n".join(f"    {line}" for line in lines[:HIT_LINES])
            where = f"{hit['path']}:{hit['start_line']}-{hit['end_line']}"
            head = f"{where}{symbol}  [{hit['kind']}, {hit['score']:.3f}]"
            blocks.append(f"{head}\n{body}{more}")
        return Output("\n\n".join(blocks), {"query": query, "hits": shown})

    return _index_plan(f"search the index for {query!r}", run, ("search_code", query, k, mode, _scope(env)))


SEARCH_CODE = Tool(
    name="search_code",
    tier=Tier.READ,
    title="Search the code",
    description=(
        "Search the workspace index (full text plus embeddings where available) for code and docs. Each "
        "hit has path:start-end, the enclosing symbol, its kind, a score and its text."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "description": "words, an identifier, or a question"},
            "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10, "description": "results"},
            "mode": {"type": "string", "enum": ["hybrid", "fts", "vector"], "default": "hybrid"},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    prepare=_prepare_search_code,
)


# ------------------------------------------------------------------------------------ find_symbol


def _prepare_find_symbol(env: ToolEnv, args: dict[str, Any]) -> Plan:
    name: str = args["name"].strip()
    if not name:
        raise ToolError("the name is empty; give a function, class or method name such as Request.get_json")

    async def run(progress: Any) -> Output:
        await env.index_ready()
        symbols = await asyncio.to_thread(env.workspace.find_symbol, name)
        found = []
        for symbol in symbols:
            safe = _visible_rel(env, symbol.path)
            if safe is None:
                continue
            found.append(
                {
                    "path": safe.shown,
                    "name": symbol.name,
                    "qualified_name": symbol.qualified_name,
                    "kind": symbol.kind,
                    "start_line": symbol.start_line,
                    "end_line": symbol.end_line,
                    "signature": symbol.signature,
                    "docstring": symbol.docstring,
                }
            )
        if not found:
            return Output(
                f"no definition named {name!r} in the index; names are exact (try the qualified name, or "
                "search_code for a looser match)",
                {"name": name, "symbols": []},
            )
        lines = []
        for item in found:
            signature = " ".join(item["signature"].split()) or item["qualified_name"]
            doc = item["docstring"].strip().splitlines()[0] if item["docstring"].strip() else ""
            lines.append(
                f"{item['path']}:{item['start_line']}-{item['end_line']}  {item['kind']} "
                f"{item['qualified_name']}\n    {signature}" + (f"\n    {doc}" if doc else "")
            )
        return Output("\n".join(lines), {"name": name, "symbols": found})

    return _index_plan(f"find the definition of {name!r}", run, ("find_symbol", name, _scope(env)))


FIND_SYMBOL = Tool(
    name="find_symbol",
    tier=Tier.READ,
    title="Find a definition",
    description=(
        "Find where a function, class, method or type is defined, by its exact name or qualified name "
        "(get_json or Request.get_json): path, lines, kind, signature and docstring."
    ),
    input_schema={
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1, "description": "the symbol's name"}},
        "required": ["name"],
        "additionalProperties": False,
    },
    prepare=_prepare_find_symbol,
)


# ------------------------------------------------------------------------------------ get_outline


def _prepare_get_outline(env: ToolEnv, args: dict[str, Any]) -> Plan:
    safe, rel = _index_rel(env, args["path"])

    async def run(progress: Any) -> Output:
        await env.index_ready()
        outline = await asyncio.to_thread(env.workspace.outline, rel)
        if outline is None:
            raise ToolError(
                f"{safe.shown} is not in the index: it does not exist, or it is ignored (.gitignore, "
                "index.exclude, built-in rules), binary, or larger than index.max_file_kb"
            )
        return Output(outline, {"path": safe.shown})

    return _index_plan(f"outline {safe.shown}", run, ("get_outline", str(safe.path)), depends_on=(safe.path,))


GET_OUTLINE = Tool(
    name="get_outline",
    tier=Tier.READ,
    title="Outline a file",
    description=(
        "A file collapsed to its signatures, docstrings and top comments, bodies elided: the quickest way "
        "to see what a file defines."
    ),
    input_schema={
        "type": "object",
        "properties": {"path": {"type": "string", "description": "a file relative to the workspace root"}},
        "required": ["path"],
        "additionalProperties": False,
    },
    prepare=_prepare_get_outline,
)


# --------------------------------------------------------------------------------------- repo_map


def repo_map_text(env: ToolEnv, budget: int, focus: list[str]) -> str:
    text = env.workspace.repo_map(budget, focus)
    blocks = [block for block in text.split("\n\n") if block]
    kept = [block for block in blocks if _visible_rel(env, block.split("\n", 1)[0].rstrip(":")) is not None]
    return "\n\n".join(kept)


def _prepare_repo_map(env: ToolEnv, args: dict[str, Any]) -> Plan:
    budget: int = args.get("token_budget", 1024)
    focus = [_index_rel(env, raw, "focus")[1] for raw in args.get("focus", [])]

    async def run(progress: Any) -> Output:
        await env.index_ready()
        text = await asyncio.to_thread(repo_map_text, env, budget, focus)
        return Output(text or "(the index is empty)", {"token_budget": budget, "focus": focus})

    return _index_plan("map the repository", run, ("repo_map", budget, tuple(focus), _scope(env)))


REPO_MAP = Tool(
    name="repo_map",
    tier=Tier.READ,
    title="Map the repository",
    description=(
        "The repository's most important files (ranked by how much other code uses them) with their key "
        "definitions' signatures, under a token budget; focus ranks the files around given paths higher."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "token_budget": {"type": "integer", "minimum": 64, "maximum": 16384, "default": 1024},
            "focus": {"type": "array", "items": {"type": "string"}, "maxItems": 20, "default": []},
        },
        "additionalProperties": False,
    },
    prepare=_prepare_repo_map,
)


# ----------------------------------------------------------------------------------- index_status


def _prepare_index_status(env: ToolEnv, args: dict[str, Any]) -> Plan:
    async def run(progress: Any) -> Output:
        await env.index_ready()
        status = (await asyncio.to_thread(env.workspace.status)).to_dict()
        lines = [f"{key}: {value}" for key, value in status.items()]
        return Output("\n".join(lines), status)

    return Plan(Tier.READ, "show the index status", run)


INDEX_STATUS = Tool(
    name="index_status",
    tier=Tier.READ,
    title="Index status",
    description="The index: files, chunks, symbols, embedder, embedding backlog, size, when it was updated.",
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    prepare=_prepare_index_status,
)

INDEX_TOOLS = [SEARCH_CODE, FIND_SYMBOL, GET_OUTLINE, REPO_MAP, INDEX_STATUS]
