"""The repository graph: which files use names that other files define, ranked like aider's repo map.

An edge A -> B means file A references names (calls, types, imports) that file B defines, or imports
module B. Its weight sums, over those names, ``sqrt(uses of the name in A) * weight(name) / definers``:
names used many times count less than linearly, private names (``_x``) count a tenth, and a name defined
in more than ``max_definers`` files, a very short name or a very common one (``get``, ``run``, dunders)
counts nothing, since it says little about which file is meant. A name the referencing file defines
itself resolves there, so it makes no edge; self edges are dropped.

``rank`` is PageRank by power iteration (numpy), its teleport personalised to the query's files when
given. ``repo_map`` packs the best files with their best symbols' signatures under a token budget.

The graph is rebuilt from plain ``Symbol`` and ``Reference`` iterables, so the indexer can feed it what it
stored rather than re-parsing files.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from swarm_lsp.code.symbols import Reference, Symbol
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.index.records import ParsedFile

__all__ = ["RepoGraph"]

MAX_DEFINERS = 5
_MIN_NAME_LENGTH = 3
_PRIVATE_WEIGHT = 0.1
_IMPORT_WEIGHT = 1.0
# Names too generic to say which file is meant, mostly methods of builtin types in common languages.
_COMMON_NAME_LIST = (
    "add all any append apply args assert bool bytes call catch clear clone close config copy count "
    "create data default delete dict emit end equals error exec exit extend filter find first float "
    "format from get has hash hashcode init insert int items iter join keys last len length list load "
    "log main make map max min name new next none null object open parse pop print printf println push "
    "put read reduce remove render replace reset resolve result run self send set setup size sort split "
    "start status stop str string super teardown test then this tostring type update value values write"
)
_COMMON_NAMES = frozenset(_COMMON_NAME_LIST.split())
_SOURCE_SUFFIXES = re.compile(r"\.(?:py|pyi|js|mjs|cjs|jsx|ts|mts|cts|tsx|go|rs|java|c|h|cc|cpp|cxx|hpp|hh)$")
_PACKAGE_FILES = frozenset({"__init__", "index", "mod", "lib", "main"})
_NON_CODE_KINDS = frozenset({"section"})
_MAX_SYMBOLS_PER_FILE = 12
_MAX_SIGNATURE_CHARS = 160


def _name_weight(name: str) -> float:
    if name.startswith("__") and name.endswith("__"):
        return 0.0
    bare = name.lstrip("_")
    if len(bare) < _MIN_NAME_LENGTH or bare.lower() in _COMMON_NAMES:
        return 0.0
    return _PRIVATE_WEIGHT if name.startswith("_") else 1.0


def _module_keys(path: str) -> list[str]:
    """Dotted suffixes a module import could use for this file: a/b/c.py -> a.b.c, b.c, c."""
    stem = _SOURCE_SUFFIXES.sub("", path)
    if stem == path:
        return []
    parts = [part for part in stem.split("/") if part]
    keys = [".".join(parts[i:]) for i in range(len(parts))]
    if len(parts) > 1 and parts[-1] in _PACKAGE_FILES:
        keys += [".".join(parts[i:-1]) for i in range(len(parts) - 1)]
    return keys


def _import_key(name: str, importer: str) -> str | None:
    """The module key an import names, resolving relative imports against the importing file."""
    if name.startswith(("./", "../")):
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(importer), name))
        if resolved.startswith(".."):
            return None
        return _SOURCE_SUFFIXES.sub("", resolved).replace("/", ".")
    if name.startswith("."):  # Python: from .b import x, from ..pkg import y
        level = len(name) - len(name.lstrip("."))
        package = posixpath.dirname(importer).split("/") if "/" in importer else []
        if level - 1 > len(package):
            return None
        base = package[: len(package) - (level - 1)]
        rest = name[level:]
        return ".".join([*base, rest] if rest else base) or None
    key = _SOURCE_SUFFIXES.sub("", name).replace("::", ".").replace("/", ".").strip(".")
    return key or None


@dataclass
class RepoGraph:
    paths: list[str]
    edges: dict[tuple[str, str], float]
    """(from, to) -> weight."""
    symbols: dict[str, list[Symbol]]
    """path -> its symbols in line order."""
    edge_names: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    """(from, to) -> the names behind the edge with their weight, for symbol ranking."""

    # -- building ------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        files_or_symbols: Iterable[ParsedFile | Symbol] = (),
        references: Iterable[Reference] = (),
        *,
        symbols: Iterable[Symbol] = (),
        paths: Iterable[str] = (),
        max_definers: int = MAX_DEFINERS,
    ) -> RepoGraph:
        """A graph from parsed files, or from stored symbols and references, plus paths with neither.

        ``build(parsed_files)``, ``build(symbols, references)`` and the keyword forms all work.
        """
        all_paths: set[str] = set(paths)
        by_path: dict[str, list[Symbol]] = defaultdict(list)
        definers: dict[str, set[str]] = defaultdict(set)
        uses: dict[tuple[str, str], int] = defaultdict(int)  # (path, name) -> references
        imports: dict[tuple[str, str], int] = defaultdict(int)  # (path, import name) -> references

        def add_symbol(symbol: Symbol) -> None:
            by_path[symbol.path].append(symbol)
            if symbol.kind not in _NON_CODE_KINDS:
                definers[symbol.name].add(symbol.path)

        def add_reference(reference: Reference) -> None:
            all_paths.add(reference.path)
            uses[(reference.path, reference.name)] += 1
            if reference.kind == "import":
                imports[(reference.path, reference.name)] += 1

        for item in files_or_symbols:
            if isinstance(item, ParsedFile):
                all_paths.add(item.record.path)
                for symbol in item.symbols:
                    add_symbol(symbol)
                for reference in item.references:
                    add_reference(reference)
            else:
                add_symbol(item)
        for symbol in symbols:
            add_symbol(symbol)
        for reference in references:
            add_reference(reference)
        all_paths.update(by_path)

        modules: dict[str, set[str]] = defaultdict(set)
        for path in all_paths:
            for key in _module_keys(path):
                modules[key].add(path)

        edge_names: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        for (source, name), count in uses.items():
            targets = definers.get(name)
            if not targets or len(targets) > max_definers or source in targets:
                continue  # unknown, ambiguous, or the file's own definition shadows the others
            weight = _name_weight(name)
            if weight <= 0:
                continue
            share = math.sqrt(count) * weight / len(targets)
            for target in targets:
                if target != source:
                    names = edge_names[(source, target)]
                    names[name] = names.get(name, 0.0) + share
        for (source, name), count in imports.items():
            key = _import_key(name, source)
            targets = modules.get(key) if key else None
            if not targets or len(targets) > max_definers:
                continue
            share = _IMPORT_WEIGHT * math.sqrt(count) / len(targets)
            for target in targets:
                if target != source:
                    names = edge_names[(source, target)]
                    module_name = f"module:{key}"
                    names[module_name] = names.get(module_name, 0.0) + share

        edges = {pair: sum(names.values()) for pair, names in edge_names.items()}
        for path_symbols in by_path.values():
            path_symbols.sort(key=lambda s: (s.start_line, -s.end_line))
        return cls(
            paths=sorted(all_paths),
            edges=edges,
            symbols=dict(by_path),
            edge_names=dict(edge_names),
        )

    # -- ranking -------------------------------------------------------------------------------------

    def rank(
        self,
        personalization: Mapping[str, float] | None = None,
        *,
        damping: float = 0.85,
        max_iterations: int = 100,
        tolerance: float = 1e-10,
    ) -> dict[str, float]:
        """PageRank of every file (scores sum to 1), teleporting to ``personalization``'s files if given.

        Files with no outgoing edges hand their score to the teleport distribution, as in networkx.
        Unknown paths in ``personalization`` are ignored; if none is known the teleport is uniform.
        """
        count = len(self.paths)
        if count == 0:
            return {}
        index = {path: i for i, path in enumerate(self.paths)}
        teleport = np.zeros(count)
        for path, weight in (personalization or {}).items():
            if path in index and weight > 0:
                teleport[index[path]] += weight
        total = teleport.sum()
        teleport = teleport / total if total > 0 else np.full(count, 1.0 / count)

        if self.edges:
            sources = np.fromiter((index[a] for a, _ in self.edges), dtype=np.int64, count=len(self.edges))
            targets = np.fromiter((index[b] for _, b in self.edges), dtype=np.int64, count=len(self.edges))
            weights = np.fromiter(self.edges.values(), dtype=np.float64, count=len(self.edges))
        else:
            sources = targets = np.zeros(0, dtype=np.int64)
            weights = np.zeros(0)
        out_weight = np.bincount(sources, weights=weights, minlength=count)
        dangling = out_weight == 0
        normalized = weights / np.where(out_weight[sources] > 0, out_weight[sources], 1.0)

        scores = np.full(count, 1.0 / count)
        for _ in range(max_iterations):
            spread = np.bincount(targets, weights=scores[sources] * normalized, minlength=count)
            updated = damping * (spread + scores[dangling].sum() * teleport) + (1 - damping) * teleport
            converged = np.abs(updated - scores).sum() < tolerance * count
            scores = updated
            if converged:
                break
        scores /= scores.sum()
        return {path: float(score) for path, score in zip(self.paths, scores, strict=True)}

    def neighbours(self, path: str) -> dict[str, float]:
        """Files ``path`` uses or is used by, with the summed edge weight both ways."""
        related: dict[str, float] = defaultdict(float)
        for (source, target), weight in self.edges.items():
            if source == path:
                related[target] += weight
            elif target == path:
                related[source] += weight
        return dict(related)

    def symbol_scores(self, file_ranks: Mapping[str, float]) -> dict[tuple[str, str], float]:
        """(path, name) -> the rank flowing to that definition: each file's rank split over its out-edges."""
        out_weight: dict[str, float] = defaultdict(float)
        for (source, _), weight in self.edges.items():
            out_weight[source] += weight
        scores: dict[tuple[str, str], float] = defaultdict(float)
        for (source, target), names in self.edge_names.items():
            flow = file_ranks.get(source, 0.0) / out_weight[source]
            for name, weight in names.items():
                scores[(target, name)] += flow * weight
        return dict(scores)

    # -- repo map ------------------------------------------------------------------------------------

    def repo_map(self, token_budget: int, focus_paths: Iterable[str] | None = None) -> str:
        """The best-ranked files with their most-used symbols' signatures, within ``token_budget``.

        One block per file, by rank: the path, then ``line  signature`` rows in line order, nested
        members indented. Files that do not fit are skipped; a file's symbol list is cut to what fits.
        """
        focus = list(focus_paths or ())
        ranks = self.rank({path: 1.0 for path in focus} if focus else None)
        scores = self.symbol_scores(ranks)
        ordered = sorted(self.paths, key=lambda path: (-ranks.get(path, 0.0), path))

        blocks: list[str] = []
        used = 0
        for path in ordered:
            if token_budget - used < 8:
                break
            header = f"{path}:"
            rows = self._symbol_rows(path, ranks.get(path, 0.0), scores)
            block = self._fit_block(header, rows, token_budget - used)
            if block is None:
                continue
            blocks.append(block)
            used += estimate_tokens(block) + 1  # the blank line between blocks
        return "\n\n".join(blocks)

    def _symbol_rows(
        self, path: str, file_rank: float, scores: Mapping[tuple[str, str], float]
    ) -> list[tuple[float, int, str]]:
        """(score, line, row text) for the file's symbols worth showing, best first."""
        candidates = [
            symbol
            for symbol in self.symbols.get(path, ())
            if symbol.kind != "variable" or scores.get((path, symbol.name))  # variables only when used
        ]
        if not candidates:
            return []
        by_name = {s.qualified_name: s for s in candidates}
        ranked: list[tuple[float, Symbol]] = []
        for symbol in candidates:
            score = scores.get((path, symbol.name), 0.0)
            depth = symbol.qualified_name.count(".") if symbol.parent else 0
            # unreferenced symbols keep file order, top-level ones first
            score += file_rank * 1e-3 / (1 + depth)
            ranked.append((score, symbol))
        ranked.sort(key=lambda item: (-item[0], item[1].start_line))
        chosen: dict[str, tuple[float, Symbol]] = {}
        for score, symbol in ranked:
            if len(chosen) >= _MAX_SYMBOLS_PER_FILE:
                break
            chosen.setdefault(symbol.qualified_name, (score, symbol))
            parent = by_name.get(symbol.parent) if symbol.parent else None
            if parent is not None:  # a member reads better under its class
                chosen.setdefault(parent.qualified_name, (score, parent))
        rows = []
        for score, symbol in chosen.values():
            depth = 0
            parent_name = symbol.parent
            while parent_name and parent_name in by_name:
                depth += 1
                parent_name = by_name[parent_name].parent
            text = f"{symbol.start_line:>6}  {'    ' * depth}{_one_line(symbol)}"
            rows.append((score, symbol.start_line, text))
        rows.sort(key=lambda row: (-row[0], row[1]))
        return rows

    @staticmethod
    def _fit_block(header: str, rows: list[tuple[float, int, str]], budget: int) -> str | None:
        """The header and as many of the best rows as fit, in line order; None if not even the header."""
        if estimate_tokens(header) > budget:
            return None
        kept: list[tuple[float, int, str]] = []
        text = header
        for row in rows:
            candidate = f"{text}\n{row[2]}"
            if estimate_tokens(candidate) > budget:
                continue
            kept.append(row)
            text = candidate
        if rows and not kept:
            return None
        kept.sort(key=lambda row: row[1])
        return "\n".join([header, *(row[2] for row in kept)])


def _one_line(symbol: Symbol) -> str:
    text = " ".join(line.strip() for line in (symbol.signature or symbol.name).split("\n"))
    text = re.sub(r"([(\[{<])\s+", r"\1", text)
    text = re.sub(r"\s+([)\]}>])", r"\1", text)
    text = re.sub(r",\s*([)\]])", r"\1", text)
    if len(text) > _MAX_SIGNATURE_CHARS:
        text = text[: _MAX_SIGNATURE_CHARS - 3] + "..."
    return text
