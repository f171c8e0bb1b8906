"""Ranking search hits: what the query asks for decides how full text, vectors and code structure count.

The store answers full-text and vector searches and finds the chunks that define a name; this module
orders what they found. Every rule can be switched off (`RankingRules`), so a benchmark can measure
each one (bench/file_retrieval.py --ablation):

- query weights: a query is read as a *symbol* lookup ("BaseModel", "Request.get_json"), *mixed* (an
  identifier inside a sentence: "what does url_quote do with unicode") or *prose*. Full-text and vector
  ranks are fused by reciprocal rank with weights by kind: names are found by their letters, behaviour
  by meaning;
- definitions: a chunk that defines a name the query uses ranks first for a symbol lookup, and high
  for a mixed query;
- file names: a file whose name (or folder) is a word of the query ranks higher ("cookies" ->
  cookies.py);
- coherence: several matching chunks in one file lift that file's best chunk;
- path priors: tests, examples, compatibility shims and re-export modules (an `__init__.py` or
  `index.js` that only imports) rank below the code they exercise or re-export; a query that asks
  for tests or examples gets those first;
- diversity: a file's second and third chunks are damped, so the top ten cover more files.

The same scores rank files (`file_scores`), so the flat search and the retriever's file ranking agree.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from swarm_lsp.index.chunk_search import ChunkHit
from swarm_lsp.index.text_query import split_identifier

QueryKind = Literal["symbol", "mixed", "prose"]

FUSION_K = 20
"""Reciprocal-rank constant: a hit at rank r scores weight / (FUSION_K + r). Lower than the classic 60,
so the first few ranks of each list count more (measured in bench/file_retrieval.py)."""
FUSION_WEIGHTS: dict[QueryKind, tuple[float, float]] = {
    "symbol": (1.0, 0.4),
    "mixed": (1.0, 0.8),
    "prose": (1.0, 1.0),
}
"""(full-text, vector) weight of each list in the fusion, by query kind."""
DEFINITION_WEIGHT: dict[QueryKind, float] = {"symbol": 3.0, "mixed": 0.6, "prose": 0.5}
"""The bonus of a defining chunk, in units of a first rank (1 / (FUSION_K + 1))."""
CASE_MISMATCH = 0.5
"""A definition whose name matches only ignoring case counts this much."""
FILE_NAME_WEIGHT = 0.4
FOLDER_NAME_WEIGHT = 0.2
COHERENCE_WEIGHT = 0.25
"""Share of a file's other matching chunks' scores (beyond its best) that lifts all its chunks."""
COHERENCE_CAP = 0.5
"""At most this many first ranks of lift from coherence."""
TEST_PRIOR = 0.5
EXAMPLE_PRIOR = 0.6
SHIM_PRIOR = 0.6
DIVERSITY_DAMPING = 0.55
"""A file's n-th chunk (n from 0) keeps DIVERSITY_DAMPING ** n of its score."""

FIRST_RANK = 1.0 / (FUSION_K + 1)

_NAME = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|::|#|->)[A-Za-z_$][\w$]*)*(?:\(\))?")
_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"[a-z0-9][A-Z]|[A-Z]{2}[a-z]")
# Plural and verb forms ask for tests; a bare "test" more often names a thing ("the test client").
_TEST_WORDS = frozenset({"tests", "tested", "unittest", "unittests", "specs", "fixtures"})
_TEST_PHRASE = re.compile(r"\b(?:unit|integration|regression)[ -]tests?\b|\btest (?:cases?|suite)\b", re.I)
_EXAMPLE_WORDS = frozenset({"example", "examples", "demo", "demos", "sample", "samples", "tutorial"})
_STOP_WORD_LIST = (
    "a an and are as at be by can do does for from how i in into is it its of on or the this to use used "
    "uses using what when where which who why with did get set"
)
_STOP_WORDS = frozenset(_STOP_WORD_LIST.split())
_DEFINING_KINDS_EXCLUDED = frozenset({"module"})
_GENERIC_FILE_WORDS = frozenset(
    {"test", "tests", "init", "index", "main", "mod", "lib", "utils", "util", "core"}
)
_TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|__tests__|testing|spec|specs|testdata|fixtures)(?:/|$)"
    r"|(?:^|/)(?:test_[^/]*|[^/]*_tests?\.[^/.]+|[^/]*\.(?:test|spec)\.[^/]+|conftest\.py)$"
)
_EXAMPLE_PATH = re.compile(r"(?:^|/)(?:examples?|samples?|demos?|tutorials?|docs_src)(?:/|$)")
_SHIM_PATH = re.compile(r"(?:^|/)[^/]*(?:compat|shim|backports?|_legacy|legacy_)[^/]*(?:/|$)", re.I)
_ALIAS_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*\s*=\s*[A-Za-z_][\w.]*\s*$")
_PACKAGE_FILES = frozenset({"__init__.py", "index.js", "index.ts", "index.mjs", "mod.rs", "lib.rs"})
_REEXPORT_LINE = re.compile(
    r"^\s*(?:from\s+\S+\s+import\b|import\b|export\s+(?:\*|\{[^}]*\}|\w+)\s+from\b|export\s*\{|"
    r"module\.exports\b|exports\.\w+\s*=|(?:pub\s+)?(?:use|mod)\s|__all__\b|[\"'\])(,\s]+$|\w+,\s*$|#|//)"
)


@dataclass(frozen=True)
class RankingRules:
    """Which ranking rules apply; all on by default. `RankingRules.none()` is plain reciprocal-rank fusion."""

    query_weights: bool = True
    definitions: bool = True
    file_names: bool = True
    coherence: bool = True
    path_priors: bool = True
    diversity: bool = True

    @classmethod
    def none(cls) -> RankingRules:
        return cls(**{rule.name: False for rule in dataclasses.fields(cls)})


@dataclass(frozen=True)
class QueryShape:
    """What a query asks for: its kind, the names it uses and its words."""

    kind: QueryKind
    names: tuple[str, ...]
    """Identifier-like parts as typed, without a trailing "()": "Request.get_json", "BaseModel"."""
    words: frozenset[str]
    """Lowercased content words, identifiers split into their parts."""
    wants_tests: bool
    wants_examples: bool

    @property
    def lookup_names(self) -> list[str]:
        """The names to look definitions up by: each as typed and its last part ("a.b.c" -> "c")."""
        found: dict[str, None] = {}
        for name in self.names:
            found[name] = None
            last = re.split(r"\.|::|#|->", name)[-1]
            found[last] = None
        return list(found)


def understand(query: str) -> QueryShape:
    """Tell a symbol lookup from a sentence, and find the names inside a sentence."""
    text = query.strip()
    tokens = _NAME.findall(text)
    names = [token.removesuffix("()") for token in tokens if _looks_like_identifier(token, text)]
    single_token = len(tokens) == 1 and not re.search(r"\s", text)
    if single_token and tokens:
        names = [tokens[0].removesuffix("()")]
    words = {word.lower() for word in _WORD.findall(text)}
    for name in names:
        words.update(part.lower() for part in split_identifier(name.replace(".", "_")))
    content = frozenset(word for word in words if word not in _STOP_WORDS)
    if names and (single_token or len(names) == len(tokens) <= 3):
        kind: QueryKind = "symbol"
    elif names:
        kind = "mixed"
    else:
        kind = "prose"
    return QueryShape(
        kind=kind,
        names=tuple(dict.fromkeys(names)),
        words=content,
        wants_tests=bool(words & _TEST_WORDS) or bool(_TEST_PHRASE.search(text)),
        wants_examples=bool(words & _EXAMPLE_WORDS),
    )


def _looks_like_identifier(token: str, text: str) -> bool:
    bare = token.removesuffix("()")
    if token.endswith("()") or re.search(r"(?:\.|::|#|->)", bare):
        return True
    if "_" in bare.strip("_") or bare.startswith("__"):
        return True
    if _CAMEL.search(bare):
        return True
    # A capitalised word inside a sentence (not its first word) is most likely a class name.
    return bare[:1].isupper() and not bare.isupper() and not text.startswith(bare)


def rank(
    shape: QueryShape,
    fts_hits: Sequence[ChunkHit],
    vector_hits: Sequence[ChunkHit],
    definitions: Sequence[ChunkHit],
    k: int,
    rules: RankingRules = RankingRules(),
) -> list[ChunkHit]:
    """The best `k` chunks for the query, under `rules`; each hit's `score` is its final score."""
    fts_weight, vector_weight = FUSION_WEIGHTS[shape.kind] if rules.query_weights else (1.0, 1.0)
    if not (fts_hits and vector_hits):  # one list alone: its weight must not shrink the other rules
        fts_weight = vector_weight = 1.0
    candidates: dict[str, ChunkHit] = {}
    scores: dict[str, float] = defaultdict(float)
    modes: dict[str, set[str]] = defaultdict(set)
    for hits, weight in ((fts_hits, fts_weight), (vector_hits, vector_weight)):
        for position, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] += weight / (FUSION_K + position)
            modes[hit.chunk_id].update(hit.modes)
            candidates[hit.chunk_id] = _merged(candidates.get(hit.chunk_id), hit)
    if rules.definitions:
        for hit in definitions:
            bonus = _definition_bonus(shape, hit)
            if bonus > 0:
                scores[hit.chunk_id] += bonus
                candidates.setdefault(hit.chunk_id, hit)
                modes[hit.chunk_id].add("definition")
    if rules.file_names:
        bonuses = _file_name_bonuses(shape, {hit.path for hit in candidates.values()})
        for chunk_id, hit in candidates.items():
            scores[chunk_id] += bonuses.get(hit.path, 0.0)
    if rules.coherence:
        _add_coherence(candidates, scores)
    if rules.path_priors:
        for chunk_id, hit in candidates.items():
            scores[chunk_id] *= path_prior(shape, hit.path, hit.text)
    order = sorted(candidates, key=lambda chunk_id: (-scores[chunk_id], candidates[chunk_id].chunk_id))
    if rules.diversity:
        order = _diversified(order, candidates, scores)
    return [
        dataclasses.replace(candidates[chunk_id], score=scores[chunk_id], modes=frozenset(modes[chunk_id]))
        for chunk_id in order[:k]
    ]


def file_scores(hits: Iterable[ChunkHit]) -> dict[str, float]:
    """Files scored from ranked hits as the flat search orders them: best chunk plus damped others."""
    scores: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)
    for hit in sorted(hits, key=lambda item: -item.score):
        scores[hit.path] += hit.score * DIVERSITY_DAMPING ** seen[hit.path]
        seen[hit.path] += 1
    return dict(scores)


def path_prior(shape: QueryShape, path: str, text: str = "") -> float:
    """How much a path's kind (test, example, shim, re-export module) damps its chunks for this query."""
    prior = 1.0
    # A query that asks for tests (or examples) gets them first; any other query, the code itself.
    if _TEST_PATH.search(path):
        prior *= 1 / TEST_PRIOR if shape.wants_tests else TEST_PRIOR
    if _EXAMPLE_PATH.search(path):
        prior *= 1 / EXAMPLE_PRIOR if shape.wants_examples else EXAMPLE_PRIOR
    if text and is_reexport(path, text):
        prior *= SHIM_PRIOR
    return prior


def is_reexport(path: str, text: str) -> bool:
    """A package file (`__init__.py`, `index.js`, `mod.rs`, ...) or a compatibility module (`_compat.py`,
    `backports`) whose text only imports, aliases and re-exports: a shim, not the code itself."""
    if posixpath.basename(path) not in _PACKAGE_FILES and not _SHIM_PATH.search(path):
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    exporting = sum(1 for line in lines if _REEXPORT_LINE.match(line) or _ALIAS_LINE.match(line))
    return exporting / len(lines) >= 0.8


def _merged(known: ChunkHit | None, hit: ChunkHit) -> ChunkHit:
    if known is None:
        return hit
    return dataclasses.replace(
        known,
        fts_score=known.fts_score if known.fts_score is not None else hit.fts_score,
        vector_distance=known.vector_distance if known.vector_distance is not None else hit.vector_distance,
    )


def _definition_bonus(shape: QueryShape, hit: ChunkHit) -> float:
    if not hit.symbol or hit.kind in _DEFINING_KINDS_EXCLUDED:
        return 0.0
    best = 0.0
    for name in shape.lookup_names:
        exact = _defines(hit.symbol, name)
        if exact:
            best = max(best, 1.0 if name in shape.names or len(shape.names) == 0 else 0.7)
        elif _defines(hit.symbol.lower(), name.lower()):
            best = max(best, CASE_MISMATCH)
    return best * DEFINITION_WEIGHT[shape.kind] * FIRST_RANK


def _defines(symbol: str, name: str) -> bool:
    """Whether a chunk's symbol ("Request.get_json") is the definition of `name` ("get_json" too)."""
    if symbol == name:
        return True
    normalised = re.sub(r"::|#|->", ".", name)
    return symbol == normalised or symbol.endswith("." + normalised)


def _file_name_bonuses(shape: QueryShape, paths: set[str]) -> dict[str, float]:
    """Bonuses of the files whose name (or folder) is a word of the query. A word that names several
    candidate files ("request" in request.py, wrappers/request.py, sansio/request.py) says less
    about which is meant: its bonus is shared among them."""
    matches: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for path in paths:
        stem = posixpath.splitext(posixpath.basename(path))[0]
        folder = posixpath.basename(posixpath.dirname(path))
        for word in _matching_words(stem, shape.words):
            matches[word].append((path, FILE_NAME_WEIGHT))
        for word in _matching_words(folder, shape.words) if folder else ():
            matches[word].append((path, FOLDER_NAME_WEIGHT))
    bonuses: dict[str, float] = defaultdict(float)
    for found in matches.values():
        files = len({path for path, _ in found})
        for path, weight in found:
            bonuses[path] += weight * FIRST_RANK / files
    return bonuses


def _matching_words(name: str, words: frozenset[str]) -> set[str]:
    parts = [part.lower() for part in split_identifier(name)]
    parts = [part for part in parts if len(part) >= 3 and part not in _GENERIC_FILE_WORDS]
    return {word for part in parts for word in words if len(word) >= 3 and _same_word(part, word)}


def _same_word(a: str, b: str) -> bool:
    """Equal, or one a simple inflection of the other (cookie / cookies, route / routing)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return (
        len(short) >= 4
        and long.startswith(short[:-1] if short.endswith("e") else short)
        and (len(long) - len(short) <= 3)
    )


def _add_coherence(candidates: dict[str, ChunkHit], scores: dict[str, float]) -> None:
    """Lift every chunk of a file by the same amount, from the support of its other matching chunks
    beyond the best one: files rise together, the order inside a file stays as the match made it."""
    by_file: dict[str, list[str]] = defaultdict(list)
    for chunk_id, hit in candidates.items():
        by_file[hit.path].append(chunk_id)
    for chunk_ids in by_file.values():
        if len(chunk_ids) < 2:
            continue
        ranked = sorted((scores[chunk_id] for chunk_id in chunk_ids), reverse=True)
        lift = min(COHERENCE_WEIGHT * sum(ranked[1:]), COHERENCE_CAP * FIRST_RANK)
        for chunk_id in chunk_ids:
            scores[chunk_id] += lift


def _diversified(order: list[str], candidates: dict[str, ChunkHit], scores: dict[str, float]) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    for chunk_id in order:
        path = candidates[chunk_id].path
        scores[chunk_id] *= DIVERSITY_DAMPING ** seen[path]
        seen[path] += 1
    return sorted(order, key=lambda chunk_id: (-scores[chunk_id], candidates[chunk_id].chunk_id))
