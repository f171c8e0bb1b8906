"""Parse one file into its record, symbols, references and chunks.

Code files go through tree-sitter (``languages.grammar``, then `code.definitions`): their chunks are
definition-aligned (`code_chunks`). Everything else, and any language whose grammar wheel does not load,
goes through the text chunker (`text_chunks`: Markdown by sections, other text by paragraphs).
Lines are 1-based and inclusive.
"""

from __future__ import annotations

import hashlib

from swarm_lsp.code.definitions import ParsedCode
from swarm_lsp.code.languages import MARKDOWN, detect_language, grammar
from swarm_lsp.code.outline import code_outline, text_outline
from swarm_lsp.code.parsing import SourceText
from swarm_lsp.code.sections import find_sections
from swarm_lsp.code.symbols import code_references, code_symbols, section_symbols
from swarm_lsp.code.tokens import CHARS_PER_TOKEN
from swarm_lsp.index.code_chunks import chunk_code
from swarm_lsp.index.records import FileRecord, ParsedFile
from swarm_lsp.index.text_chunks import chunk_text

__all__ = ["parse_file"]


def parse_file(path: str, data: bytes | str, *, mtime_ns: int = 0, chunk_tokens: int = 400) -> ParsedFile:
    """Parse one file: its record (with outline), symbols, references and chunks.

    ``path`` is workspace-relative POSIX; ``data`` the file's bytes (invalid UTF-8 is decoded with
    replacement characters) or text. ``chunk_tokens`` is the chunk budget in ``estimate_tokens`` units.
    Never raises on malformed source: tree-sitter recovers from syntax errors and the symbols it still
    finds are kept; a language whose grammar is missing falls back to the text chunker.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
        text = data
    else:
        raw = bytes(data)
        text = raw.decode("utf-8", "replace")
    source = SourceText(text.removeprefix("\ufeff"))
    language = detect_language(path, source.text)
    budget = max(chunk_tokens, 1) * CHARS_PER_TOKEN

    loaded = grammar(language)
    if loaded is not None:
        code = ParsedCode(path, source, loaded)
        symbols, references = code_symbols(code), code_references(code)
        chunks = chunk_code(code, budget)
        outline = code_outline(code)
    else:
        sections = find_sections(source) if language == MARKDOWN else []
        symbols, references = section_symbols(path, source, sections), []
        chunks = chunk_text(path, language, source, sections, budget)
        outline = text_outline(path, source, sections)
    record = FileRecord(
        path=path,
        language=language,
        size=len(raw),
        mtime_ns=mtime_ns,
        sha256=hashlib.sha256(raw).hexdigest(),
        outline=outline,
    )
    return ParsedFile(record=record, symbols=symbols, chunks=chunks, references=references)
