"""textDocument/inlineCompletion (LSP 3.18): ghost text at the cursor from the core's completer.

Per document, only the newest request is worth answering: a request waits `completion.debounce_ms`
for the next keystroke, and a newer request for the same document cancels the one before it (its
decoding stops within one token step) and that one answers nothing. `$/cancelRequest` cancels the
handler too (pygls cancels its task, which cancels the generation). The suggestion is inserted at
the cursor: a range from the cursor to itself, so accepting never overwrites the text after it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

from lsprotocol import types

from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.completion import Completer
from swarm_lsp.lsp.session import Session

log = logging.getLogger(__name__)


class InlineCompletions:
    def __init__(self) -> None:
        self._completers: dict[Path, Completer] = {}
        self._newest: dict[str, int] = {}
        self._running: dict[str, CancellationToken] = {}
        self._numbers = itertools.count(1)
        self._told: set[str] = set()
        self.requests = 0
        self.answered = 0
        self.served_from_cache = 0
        self.superseded = 0
        """Requests that were still waiting or decoding when a newer one for the document came."""

    def counts(self) -> dict[str, int]:
        """What inline completion has done since the server started (`swarm.status` reports it)."""
        return {
            "requests": self.requests,
            "answered": self.answered,
            "servedFromCache": self.served_from_cache,
            "superseded": self.superseded,
        }

    async def answer(
        self, session: Session, params: types.InlineCompletionParams, tell: Callable[[str], None]
    ) -> types.InlineCompletionList | None:
        """The suggestion at the cursor, or None. A failure of the model (missing, does not fit) is
        told once through `tell` and answers None: it must not interrupt every keystroke."""
        uri = params.text_document.uri
        target = session.target(uri)  # ValueError (-32602) outside the workspace folders
        workspace = target.workspace
        settings = workspace.settings.completion
        if not settings.enabled:
            return None
        self.requests += 1
        number = self._newest[uri] = next(self._numbers)
        previous = self._running.pop(uri, None)
        if previous is not None:
            previous.cancel()
        if settings.debounce_ms:
            await asyncio.sleep(settings.debounce_ms / 1000)
            if self._newest.get(uri) != number:
                self.superseded += 1
                return None
        document = target.document
        line, column = document.position(params.position)
        completer = self._completers.get(target.folder.root)
        if completer is None or completer.workspace is not workspace:
            completer = self._completers[target.folder.root] = Completer(workspace)
        cancel = self._running[uri] = CancellationToken()
        try:
            suggestion = await completer.complete(
                target.path, list(document.lines), line, column, cancel=cancel
            )
        except asyncio.CancelledError:
            cancel.cancel()
            raise
        except SwarmLspError as error:
            if str(error) not in self._told:
                self._told.add(str(error))
                tell(f"swarm-lsp: no inline completion: {error}")
            log.warning("inline completion failed: %s", error)
            return None
        finally:
            if self._running.get(uri) is cancel:
                del self._running[uri]
        if self._newest.get(uri) != number:
            self.superseded += 1
            return None
        if suggestion is None:
            return None
        self.answered += 1
        if suggestion.from_cache:
            self.served_from_cache += 1
        at = document.lsp_position(line, column)
        item = types.InlineCompletionItem(insert_text=suggestion.text, range=types.Range(at, at))
        return types.InlineCompletionList(items=[item])
