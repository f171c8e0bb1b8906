"""Inline completion for one workspace: the text the model would write at the cursor.

Latency comes first (a suggestion is only useful while the user is still typing):

- one voter by default, decoded greedily, with a small token budget;
- the prompt starts at a line that moves only every `WINDOW_STEP` lines, and the repository
  context is chosen once per window (from the names the window uses), so while the user types,
  or moves within the window, every request shares its prompt up to the cursor's line with the one
  before, and the backend's KV cache re-reads only what changed;
- a suggestion the user is typing into is served from `SuggestionCache` without a model call;
- the caller cancels a superseded request (its token stops decoding within one token step).

Repository context: the definitions (signature and first docstring line) of the names the window
uses most, from the index's symbols, inside `completion.context_tokens`; definitions in the window
itself are left out (the model sees them already).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swarm_lsp.basics import CancellationToken
from swarm_lsp.code.languages import detect_language
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.models.base import GREEDY, GenerationRequest, Sampling
from swarm_lsp.swarm.fill import FillRequest, choose, fill_prompt, trim_suggestion

if TYPE_CHECKING:
    from swarm_lsp.code.symbols import Symbol
    from swarm_lsp.workspace import Workspace

WINDOW_STEP = 32
"""The prompt's first line moves in steps of this many lines (so it stays put while typing)."""
MAX_NAMES = 16
STOPS = ("\n\n\n",)
TIMEOUT_S = 20.0
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset(
    [
        "False",
        "None",
        "True",
        "and",
        "as",
        "assert",
        "async",
        "await",
        "break",
        "class",
        "continue",
        "def",
        "del",
        "elif",
        "else",
        "except",
        "finally",
        "for",
        "from",
        "global",
        "if",
        "import",
        "in",
        "is",
        "lambda",
        "nonlocal",
        "not",
        "or",
        "pass",
        "raise",
        "return",
        "try",
        "while",
        "with",
        "yield",
        "self",
        "cls",
        "const",
        "let",
        "var",
        "function",
        "new",
        "this",
        "typeof",
        "instanceof",
        "void",
        "func",
        "package",
        "struct",
        "type",
        "interface",
        "impl",
        "fn",
        "pub",
        "mut",
        "use",
        "mod",
        "match",
        "enum",
        "static",
        "public",
        "private",
        "protected",
        "int",
        "str",
        "bool",
        "float",
        "string",
    ]
)


@dataclass(frozen=True)
class Suggestion:
    text: str
    from_cache: bool
    elapsed_s: float
    model: str = ""


@dataclass
class _Shown:
    path: str
    before: str
    after: str
    text: str


class SuggestionCache:
    """The last suggestion shown: typing its characters keeps serving the rest of it."""

    def __init__(self) -> None:
        self._shown: _Shown | None = None

    def remember(self, path: str, before: str, after: str, text: str) -> None:
        self._shown = _Shown(path, before, after, text) if text else None

    def remainder(self, path: str, before: str, after: str) -> str | None:
        """What is left of the shown suggestion after the user typed part of it; None if the user
        went elsewhere or typed something else."""
        shown = self._shown
        if shown is None or shown.path != path or after != shown.after or not before.startswith(shown.before):
            return None
        typed = before[len(shown.before) :]
        if not shown.text.startswith(typed) or len(typed) >= len(shown.text):
            return None
        return shown.text[len(typed) :]


class Completer:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.cache = SuggestionCache()
        self._context_key: tuple[str, int] | None = None
        self._context: list[str] = []

    async def complete(
        self, path: str, lines: list[str], line: int, column: int, *, cancel: CancellationToken | None = None
    ) -> Suggestion | None:
        """A suggestion for the cursor at 0-based (`line`, `column`) in `lines` (the buffer as the
        editor has it; `path` is workspace-relative). None when there is nothing to suggest."""
        started = time.monotonic()
        settings = self.workspace.settings.completion
        current = lines[line][:column]
        first = max(0, (line - settings.prefix_lines) // WINDOW_STEP * WINDOW_STEP)
        before = "\n".join([*lines[first:line], current])
        after = "\n".join([lines[line][column:], *lines[line + 1 : line + 1 + settings.suffix_lines]])
        remainder = self.cache.remainder(path, before, after)
        if remainder is not None:
            return Suggestion(remainder, True, time.monotonic() - started)
        language = detect_language(path, "")
        window = lines[first : first + settings.prefix_lines + WINDOW_STEP]
        snippets = await asyncio.to_thread(self._snippets, path, window, first, settings.context_tokens)
        request = FillRequest(path, language, before, after, snippets)
        backend = await asyncio.to_thread(self.workspace.completion_backend)
        if not settings.reuse_cache and hasattr(backend, "reset_cache"):
            backend.reset_cache()
        count = settings.voters
        sampled = [Sampling(temperature=0.4, top_p=0.95, top_k=40, seed=index) for index in range(1, count)]
        candidates = await backend.generate(
            GenerationRequest(
                messages=[],
                prompt=fill_prompt(request, backend.info.fim),
                n=count,
                sampling=[GREEDY, *sampled],
                max_tokens=settings.max_tokens if request.multiline else min(settings.max_tokens, 32),
                stop=[*STOPS, "\n"] if not request.multiline else list(STOPS),
                cancel=cancel,
                timeout=TIMEOUT_S,
                reuse_whole_prefix=settings.reuse_cache,
            )
        )
        if cancel is not None and cancel.cancelled:
            return None
        finished = [c for c in candidates if c.finish_reason != "cancelled"]
        text = choose(
            [trim_suggestion(c.text, request, cut_short=c.finish_reason == "length") for c in finished]
        )
        self.cache.remember(path, before, after, text)
        if not text:
            return None
        return Suggestion(text, False, time.monotonic() - started, backend.info.model)

    # ------------------------------------------------------------------------ context

    def _snippets(self, path: str, window: list[str], first: int, budget: int) -> list[str]:
        """Definitions of the names `window` (the prompt's lines from `first`) uses most, kept until
        the window moves, so the prompt's start does not change while the user types."""
        if budget <= 0:
            return []
        key = (path, first)
        if key != self._context_key:
            self._context_key, self._context = key, self._find(path, window, first, budget)
        return self._context

    def _find(self, path: str, window: list[str], first: int, budget: int) -> list[str]:
        names = names_by_use(window)
        if not names:
            return []
        try:
            found = self.workspace.definitions(names)
        except Exception:  # no index yet (or it is being rebuilt): complete without context
            return []
        rank = {name: number for number, name in enumerate(names)}
        last = first + len(window)
        found = [s for s in found if not (s.path == path and first < s.start_line <= last)]
        found.sort(key=lambda symbol: (rank.get(symbol.name, len(rank)), symbol.path, symbol.start_line))
        snippets, used, seen = [], 0, set()
        for symbol in found:
            if symbol.name in seen:
                continue
            snippet = _describe(symbol)
            cost = estimate_tokens(snippet)
            if used + cost > budget:
                continue
            seen.add(symbol.name)
            snippets.append(snippet)
            used += cost
        return snippets


def names_by_use(lines: list[str]) -> list[str]:
    """Identifiers in `lines`, the most used first (then by first use), without keywords."""
    counts: dict[str, int] = {}
    for text in lines:
        for name in _NAME.findall(text):
            if name not in _KEYWORDS and len(name) > 2:
                counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda name: -counts[name])[:MAX_NAMES]


def _describe(symbol: Symbol) -> str:
    doc = symbol.docstring.strip().splitlines()[0] if symbol.docstring.strip() else ""
    head = f"{symbol.path}:{symbol.start_line}: {symbol.signature.strip()}"
    return f"{head}\n    {doc}" if doc else head
