"""Grounded verification: check what a candidate answer claims about the workspace against its index.

Codebase answers name things: files, classes, functions, settings. Each name a candidate gives is a
*claim*, checked against the workspace's definitions (`CodeFacts`, which the core provides from the
index's symbols table):

- a claim that relates to the question *checks out* (+1): a named file defines a name the question
  asks about; a named class holds it as a member; a named symbol is defined in the same file as it,
  or inside it;
- a claim that exists but does not relate is *neutral* (0): true, but not evidence for this answer;
- a claim that names nothing in the workspace is *missing* (-1): an invented file or symbol.

`Evidence.score` is 0.5 + 0.5 x the mean of the points (0.5 with no claims): 1 when every claim
checks out, 0 when every claim is invented. Names the question itself gives are restatements, not
claims. Only code-shaped words count as symbol claims (`snake_case`, `CamelCase`, `dotted.names`,
`calls()`, words in backticks), so ordinary prose is never penalised.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from swarm_lsp.code.symbols import Symbol

__all__ = ["CodeFacts", "Evidence", "FactIndex", "check_claims", "gather_evidence", "question_names"]

_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.[A-Za-z][A-Za-z0-9]{0,5})(?![\w/])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_BACKTICKED = re.compile(r"`([^`\n]{1,120})`")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\(")
_MIN_NAME = 3
_COMMON_WORDS = frozenset(
    {
        "the", "and", "for", "with", "from", "that", "this", "which", "what", "where", "when", "class",
        "function", "method", "file", "files", "module", "defines", "defined", "define", "returns",
        "return", "value", "values", "object", "objects", "true", "false", "none", "self",
    }
)  # fmt: skip


class CodeFacts(Protocol):
    """What verification reads from the workspace (the core's `Workspace` satisfies it)."""

    def definitions(self, names: list[str]) -> list[Symbol]:
        """Definitions of any of `names` (exact names)."""
        ...

    def indexed_paths(self) -> list[str]:
        """Every indexed file, relative to the workspace root."""
        ...


@dataclass(frozen=True)
class Evidence:
    """What checked out in one candidate's answer."""

    score: float
    supported: tuple[str, ...] = ()
    """Claims that relate to the question (a file or symbol that defines or holds what it asks about),
    as the workspace names them (the indexed path, the qualified name), so equal claims compare equal."""
    neutral: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    """Files or symbols the workspace does not have."""

    @property
    def claims(self) -> int:
        return len(self.supported) + len(self.neutral) + len(self.missing)

    def to_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 3),
            "supported": list(self.supported),
            "neutral": list(self.neutral),
            "missing": list(self.missing),
        }


@dataclass
class FactIndex:
    """The definitions and paths one vote needs, read from `CodeFacts` in one query."""

    symbols: dict[str, list[Symbol]] = field(default_factory=dict)
    """By name and by qualified name."""
    paths: frozenset[str] = frozenset()

    @classmethod
    def read(cls, facts: CodeFacts, names: Iterable[str]) -> FactIndex:
        """The definitions of `names` (and of each part of a dotted name) and the indexed paths."""
        wanted = sorted({part for name in names for part in name.split(".") if len(part) >= _MIN_NAME})
        index = cls(paths=frozenset(facts.indexed_paths()))
        for symbol in facts.definitions(wanted) if wanted else []:
            index.symbols.setdefault(symbol.name, []).append(symbol)
            if symbol.qualified_name != symbol.name:
                index.symbols.setdefault(symbol.qualified_name, []).append(symbol)
        return index

    def defined(self, name: str) -> list[Symbol]:
        found = self.symbols.get(name)
        if found:
            return found
        last = name.rsplit(".", 1)[-1]
        return [s for s in self.symbols.get(last, []) if s.qualified_name.endswith(name)]

    def file(self, claimed: str) -> str | None:
        """The indexed path a claimed path names: itself, or the one file it is a suffix of."""
        claimed = claimed.removeprefix("./")
        if claimed in self.paths:
            return claimed
        matches = [path for path in self.paths if path.endswith("/" + claimed)]
        return matches[0] if len(matches) == 1 else None

    def ambiguous_file(self, claimed: str) -> bool:
        claimed = claimed.removeprefix("./")
        return sum(path.endswith("/" + claimed) for path in self.paths) > 1


def question_names(question: str) -> list[str]:
    """The words of a question that could name code (the index decides which do)."""
    words = {match.group(0) for match in _WORD.finditer(question)}
    words |= {match.group(1).strip() for match in _BACKTICKED.finditer(question)}
    return sorted(w for w in words if len(w) >= _MIN_NAME and w.lower() not in _COMMON_WORDS)


def answer_names(answer: str) -> tuple[list[str], list[str], list[str]]:
    """The file paths, the code-shaped names and the capitalised words an answer gives, in order of
    first mention. Capitalised words (`Request`) may name a class or be prose: they count as claims
    only when the workspace defines them."""
    found = (match.group(1) for match in _PATH.finditer(answer))
    # A bare name needs a stem of two characters: "main.c" is a file, "e.g" is not.
    paths = list(dict.fromkeys(p for p in found if "/" in p or len(p.split(".", 1)[0]) >= 2))
    path_words = {part for path in paths for part in re.split(r"[/.]", path)}
    names: dict[str, None] = {}
    for match in _BACKTICKED.finditer(answer):
        inner = match.group(1).strip().rstrip("()")
        if _WORD.fullmatch(inner) and not _PATH.fullmatch(inner):
            names[inner] = None
    for match in _CALL.finditer(answer):
        names[match.group(1)] = None
    for match in _WORD.finditer(answer):
        word = match.group(0)
        if _code_shaped(word) and word not in path_words and not any(word in path for path in paths):
            names[word] = None
    hard = [n for n in names if len(n) >= _MIN_NAME and n.lower() not in _COMMON_WORDS]
    soft = [
        word
        for word in dict.fromkeys(match.group(0) for match in _WORD.finditer(answer))
        if word[:1].isupper()
        and word not in names
        and word not in path_words
        and len(word) >= _MIN_NAME
        and word.lower() not in _COMMON_WORDS
    ]
    return paths, hard, soft


def _code_shaped(word: str) -> bool:
    """snake_case, CamelCase (an inner capital), or dotted.names: not an ordinary English word."""
    bare = word.strip("_")
    if "." in word:  # module.name, Class.method; not "e.g" or "i.e"
        return all(len(part) >= 2 for part in word.split("."))
    return "_" in bare or re.search(r"[a-z][A-Z]", word) is not None


def check_claims(answer: str, facts: FactIndex, asked: Sequence[str]) -> Evidence:
    """The evidence for one answer; `asked` are the question's names the workspace defines."""
    paths, names, soft = answer_names(answer)
    asked_set = set(asked)
    asked_symbols = [symbol for name in asked for symbol in facts.defined(name)]
    asked_files = {symbol.path for symbol in asked_symbols}
    supported: list[str] = []
    neutral: list[str] = []
    missing: list[str] = []
    for claimed in paths:
        path = facts.file(claimed)
        if path is None:
            (neutral if facts.ambiguous_file(claimed) else missing).append(claimed)
        elif path in asked_files:
            supported.append(path)
        else:
            neutral.append(claimed)
    for name in names:
        if name in asked_set or name.rsplit(".", 1)[-1] in asked_set:
            continue  # the question's own words, repeated
        defined = facts.defined(name)
        if not defined:
            missing.append(name)
        elif _relates(defined, asked_symbols):
            supported.append(defined[0].qualified_name)
        else:
            neutral.append(name)
    for name in soft:
        defined = facts.defined(name) if name not in asked_set else []
        if defined and _relates(defined, asked_symbols):
            supported.append(defined[0].qualified_name)
        elif defined:
            neutral.append(name)
    points = [1.0] * len(supported) + [0.0] * len(neutral) + [-1.0] * len(missing)
    score = 0.5 + 0.5 * sum(points) / len(points) if points else 0.5
    return Evidence(score, tuple(supported), tuple(neutral), tuple(missing))


def _relates(claimed: Collection[Symbol], asked: Collection[Symbol]) -> bool:
    """Whether a named symbol holds, or sits beside, one the question asks about."""
    for symbol in claimed:
        for target in asked:
            if target.parent == symbol.qualified_name or symbol.parent == target.qualified_name:
                return True
            if target.path == symbol.path and symbol.qualified_name != target.qualified_name:
                return True
    return False


def gather_evidence(question: str, answers: Mapping[int, str], facts: CodeFacts) -> dict[int, Evidence]:
    """The evidence of each answer (by ballot index), from one read of the workspace's definitions;
    empty when the workspace has no index yet (every claim would look invented)."""
    asked_words = question_names(question)
    named = [name for answer in answers.values() for group in answer_names(answer)[1:] for name in group]
    index = FactIndex.read(facts, [*asked_words, *named])
    if not index.paths:
        return {}
    asked = [word for word in asked_words if index.defined(word)]
    return {i: check_claims(answer, index, asked) for i, answer in answers.items()}
