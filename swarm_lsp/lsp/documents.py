"""Open buffers, tracked incrementally, and positions in the negotiated encoding.

LSP positions are (line, character) with the character counted in the encoding both sides agreed
on at initialize: UTF-16 code units unless the client offered UTF-8 or UTF-32. The core counts
columns in code points (Python string indices) and lines from 1. This module is where the two
meet; nothing else converts.

Lines end at "\\n", "\\r\\n" or a lone "\\r", LSP's three line breaks, and nowhere else:
`str.splitlines` would also split on form feeds and U+2028, which would put every later position on
the wrong line. A "\\r\\n" keeps its "\\r" at the end of its line, so the text comes back as it was;
a lone "\\r" becomes "\\n" in `Document.text`, so the core's `TextRange`, which counts "\\n", counts
the editor's lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types
from pygls.uris import to_fs_path

from swarm_lsp.swarm.tasks import TextRange

UTF8 = types.PositionEncodingKind.Utf8.value
UTF16 = types.PositionEncodingKind.Utf16.value
UTF32 = types.PositionEncodingKind.Utf32.value
ENCODINGS = (UTF8, UTF16, UTF32)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SPLIT = re.compile(r"\n|\r(?!\n)")
"""Where lines are cut: at each "\\n" (a "\\r" before it stays on its line) and at each lone "\\r"."""
_LONE_CR = re.compile(r"\r(?!\n)")


def split_lines(text: str) -> list[str]:
    """`text` cut at LSP's line breaks; a "\\r\\n" keeps its "\\r" at the end of its line."""
    return _SPLIT.split(text) if "\r" in text else text.split("\n")


def _has_lone_cr(text: str) -> bool:
    return "\r" in text and _LONE_CR.search(text) is not None


def _content(line: str) -> str:
    """A line without the "\\r" of a "\\r\\n" break."""
    return line[:-1] if line.endswith("\r") else line


def to_code_points(line: str, column: int, encoding: str) -> int:
    """The code point index of `column` (client units) in `line`, clamped to the line's end.

    A column inside a character (half of a surrogate pair, part of a UTF-8 sequence) rounds down.
    """
    content = _content(line)
    if column <= 0:
        return 0
    if encoding == UTF32 or content.isascii():
        return min(column, len(content))
    if encoding == UTF16:
        units = content.encode("utf-16-le")[: 2 * column]
        return len(units.decode("utf-16-le", errors="ignore"))
    return len(content.encode("utf-8")[:column].decode("utf-8", errors="ignore"))


def to_client_units(line: str, column: int, encoding: str) -> int:
    """The client column of code point index `column` in `line`."""
    prefix = _content(line)[:column]
    if encoding == UTF32 or prefix.isascii():
        return len(prefix)
    if encoding == UTF16:
        return len(prefix.encode("utf-16-le")) // 2
    return len(prefix.encode("utf-8"))


@dataclass
class Document:
    """One file's text as the editor has it, in lines, with its version."""

    uri: str
    version: int | None
    lines: list[str]
    encoding: str = UTF16
    language_id: str = ""
    changed: bool = False
    """Edited since it was opened (its text may differ from the file on disk)."""
    _text: str | None = field(default=None, repr=False)
    _exact: str | None = field(default=None, repr=False)
    """The editor's exact text, kept only while it holds a lone "\\r" (`text` says "\\n" for those)."""

    @classmethod
    def from_text(
        cls, uri: str, text: str, version: int | None = None, encoding: str = UTF16, language_id: str = ""
    ) -> Document:
        if _has_lone_cr(text):
            return cls(uri, version, split_lines(text), encoding, language_id, _exact=text)
        return cls(uri, version, text.split("\n"), encoding, language_id, _text=text)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "\n".join(self.lines)
        return self._text

    # ---------------------------------------------------------------- changes

    def apply_change(self, change: types.TextDocumentContentChangeEvent, version: int | None) -> None:
        """Apply one didChange content change: a range and its new text, or the whole text."""
        if isinstance(change, types.TextDocumentContentChangePartial):
            start_line, start_col = self.position(change.range.start)
            end_line, end_col = self.position(change.range.end)
            if (end_line, end_col) < (start_line, start_col):
                raise ValueError(
                    f"{self.uri}: a change ends ({end_line}:{end_col}) before it starts "
                    f"({start_line}:{start_col})"
                )
            if self._exact is None and "\r" not in change.text:
                # No lone "\\r" before or after: the lines around the change are all there is to redo.
                head = self.lines[start_line][:start_col]
                tail = self.lines[end_line][end_col:]
                self.lines[start_line : end_line + 1] = (head + change.text + tail).split("\n")
            else:
                # A "\\r" next to a "\\n" joins into one line break: redo the lines from the exact text.
                exact = self.text if self._exact is None else self._exact
                starts = [0, *(match.end() for match in _LINE_BREAK.finditer(exact))]
                start, end = starts[start_line] + start_col, starts[end_line] + end_col
                self._replace_text(exact[:start] + change.text + exact[end:])
        else:
            self._replace_text(change.text)
        self._text = None
        self.version = version
        self.changed = True

    def _replace_text(self, text: str) -> None:
        self._exact = text if _has_lone_cr(text) else None
        self.lines = split_lines(text)

    # -------------------------------------------------------------- positions

    def position(self, position: types.Position) -> tuple[int, int]:
        """(0-based line, code point column) of an LSP position, clamped into the document.

        A line past the end means the end of the document, as the spec allows.
        """
        if position.line >= len(self.lines):
            last = len(self.lines) - 1
            return last, len(_content(self.lines[last]))
        line = self.lines[position.line]
        return position.line, to_code_points(line, position.character, self.encoding)

    def lsp_position(self, line: int, column: int) -> types.Position:
        """The LSP position of (0-based line, code point column)."""
        return types.Position(line, to_client_units(self.lines[line], column, self.encoding))

    def text_range(self, rng: types.Range) -> TextRange:
        """The core's range for an editor selection (1-based lines, code point columns).

        Whole lines stay whole: a selection that starts at a line's first column has no start
        column, one that ends at column 0 of a later line ends at the end of the line before, and
        one that ends at its line's end has no end column. An empty range stays empty.
        """
        start_line, start_col = self.position(rng.start)
        end_line, end_col = self.position(rng.end)
        if (end_line, end_col) < (start_line, start_col):
            raise ValueError(
                f"the range ends (line {rng.end.line}, character {rng.end.character}) before it starts "
                f"(line {rng.start.line}, character {rng.start.character})"
            )
        if (start_line, start_col) == (end_line, end_col):
            return TextRange(start_line + 1, start_line + 1, start_col, start_col)
        if end_col == 0 and end_line > start_line:
            end_line -= 1
            end_col = len(_content(self.lines[end_line]))
        whole_end = end_col == len(_content(self.lines[end_line]))
        return TextRange(
            start_line + 1,
            end_line + 1,
            None if start_col == 0 else start_col,
            None if whole_end else end_col,
        )

    def lsp_range(self, rng: TextRange) -> types.Range:
        """The LSP range of a core range (see `TextRange` for what None columns mean)."""
        if rng.end_line > len(self.lines):
            raise ValueError(
                f"{self.uri}: the range ends at line {rng.end_line}, but the text has {len(self.lines)} lines"
            )
        first, last = rng.start_line - 1, rng.end_line - 1
        end_col = len(_content(self.lines[last])) if rng.end_col is None else rng.end_col
        return types.Range(self.lsp_position(first, rng.start_col or 0), self.lsp_position(last, end_col))

    def range_text(self, rng: TextRange) -> str:
        """The text a core range covers (what the core would send as the selection)."""
        lines = self.lines[rng.start_line - 1 : rng.end_line]
        lines[-1] = _content(lines[-1])
        if rng.end_col is not None:
            lines[-1] = lines[-1][: rng.end_col]
        if rng.start_col is not None:
            lines[0] = lines[0][rng.start_col :]
        return "\n".join(lines)


class Documents:
    """The open buffers by URI (and by file path, since two spellings of a URI name one file)."""

    def __init__(self, encoding: str = UTF16) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown position encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        self._open: dict[str, Document] = {}
        self._paths: dict[Path, str] = {}

    def open(self, item: types.TextDocumentItem) -> Document:
        document = Document.from_text(item.uri, item.text, item.version, self.encoding, item.language_id)
        self._open[item.uri] = document
        path = to_fs_path(item.uri)
        if path is not None:
            self._paths[Path(path).resolve()] = item.uri
        return document

    def change(self, params: types.DidChangeTextDocumentParams) -> Document:
        document = self.get(params.text_document.uri)
        for change in params.content_changes:
            document.apply_change(change, params.text_document.version)
        return document

    def close(self, uri: str) -> Document | None:
        self._paths = {path: known for path, known in self._paths.items() if known != uri}
        return self._open.pop(uri, None)

    def get(self, uri: str) -> Document:
        """The open buffer at `uri`; ValueError naming the URI when it is not open."""
        document = self._open.get(uri)
        if document is None:
            raise ValueError(f"{uri} is not open in the editor (no didOpen was received for it)")
        return document

    def find(self, uri: str) -> Document | None:
        return self._open.get(uri)

    def at_path(self, path: Path) -> Document | None:
        """The open buffer of the file at `path` (resolved), whatever URI the editor used for it."""
        uri = self._paths.get(path.resolve())
        return None if uri is None else self._open.get(uri)

    def __len__(self) -> int:
        return len(self._open)
