"""Chunking, symbols and outlines per language, on real snippets under tests/fixtures/chunker."""

from __future__ import annotations

import ast
import hashlib
import itertools
import textwrap
import time
from pathlib import Path

import pytest

from swarm_lsp.code import languages
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.index import chunker
from swarm_lsp.index.chunker import parse_file
from swarm_lsp.index.records import Chunk, ParsedFile

FIXTURES = Path(__file__).parent / "fixtures" / "chunker"
ALL_FIXTURES = sorted(path.name for path in FIXTURES.iterdir())


def parse_fixture(name: str, chunk_tokens: int = 400) -> ParsedFile:
    return parse_file(name, (FIXTURES / name).read_bytes(), mtime_ns=7, chunk_tokens=chunk_tokens)


def symbol_table(parsed: ParsedFile) -> list[tuple[str, str, int, int]]:
    return [(s.qualified_name, s.kind, s.start_line, s.end_line) for s in parsed.symbols]


def chunk_table(parsed: ParsedFile) -> list[tuple[str, str | None, int, int]]:
    return [(c.kind, c.symbol, c.start_line, c.end_line) for c in parsed.chunks]


def symbol(parsed: ParsedFile, qualified_name: str):
    matches = [s for s in parsed.symbols if s.qualified_name == qualified_name]
    assert matches, f"no symbol {qualified_name}: {[s.qualified_name for s in parsed.symbols]}"
    return matches[0]


def assert_covers_every_line(text: str, chunks: list[Chunk]) -> None:
    covered: set[int] = set()
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    lines = text.split("\n")
    missing = [number for number, line in enumerate(lines, 1) if line.strip() and number not in covered]
    assert not missing, f"lines not in any chunk: {missing}"
    assert max(covered, default=0) <= len(lines)


# ---------------------------------------------------------------------------------------------- languages


@pytest.mark.parametrize("language", sorted(languages.SPECS))
def test_every_query_compiles_against_the_installed_grammar(language):
    definitions, references = languages.compile_queries(language)
    assert definitions.pattern_count > 0
    assert references.pattern_count > 0
    assert languages.grammar(language) is not None


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a/b.py", "python"),
        ("stubs/x.pyi", "python"),
        ("web/app.js", "javascript"),
        ("web/app.mjs", "javascript"),
        ("web/app.cjs", "javascript"),
        ("web/App.jsx", "javascript"),
        ("web/app.ts", "typescript"),
        ("web/app.mts", "typescript"),
        ("web/app.cts", "typescript"),
        ("web/App.tsx", "tsx"),
        ("cmd/main.go", "go"),
        ("src/lib.rs", "rust"),
        ("src/Main.java", "java"),
        ("src/ring.c", "c"),
        ("include/ring.h", "c"),
        ("src/a.cc", "cpp"),
        ("src/a.cpp", "cpp"),
        ("src/a.cxx", "cpp"),
        ("include/a.hpp", "cpp"),
        ("include/a.hh", "cpp"),
        ("README.md", "markdown"),
        ("Makefile", "text"),
        ("config/settings.toml", "text"),
        ("data.unknownext", "text"),
        ("UPPER.PY", "python"),
    ],
)
def test_language_for_maps_names(path, language):
    assert languages.language_for(path) == language


def test_detect_language_refines_by_content():
    assert languages.detect_language("include/w.h", "namespace w {\nclass W {};\n}\n") == "cpp"
    assert languages.detect_language("include/w.h", "struct w { int x; };\n") == "c"
    assert languages.detect_language("bin/tool", "#!/usr/bin/env python3\nprint(1)\n") == "python"
    assert languages.detect_language("bin/tool", "plain words\n") == "text"


def test_a_missing_grammar_wheel_degrades_to_none(monkeypatch):
    bogus = languages.LanguageSpec(
        id="bogus",
        module="tree_sitter_does_not_exist",
        loader="language",
        extensions=(".bogus",),
        definitions="",
        references="",
    )
    monkeypatch.setitem(languages.SPECS, "bogus", bogus)
    assert languages.load_language("bogus") is None
    assert languages.grammar("bogus") is None
    assert not languages.has_grammar("bogus")
    assert languages.grammar("not-a-language") is None


def test_a_missing_grammar_falls_back_to_the_text_chunker(monkeypatch):
    monkeypatch.setattr(chunker, "grammar", lambda language: None)
    text = (FIXTURES / "ratelimit.py").read_text()
    parsed = parse_file("ratelimit.py", text, chunk_tokens=80)
    assert parsed.record.language == "python"
    assert parsed.symbols == []
    assert parsed.references == []
    assert {chunk.kind for chunk in parsed.chunks} == {"text"}
    assert_covers_every_line(text, parsed.chunks)


# ---------------------------------------------------------------------------------------------- Python


def test_python_symbols_are_qualified_with_exact_ranges():
    parsed = parse_fixture("ratelimit.py")
    assert symbol_table(parsed) == [
        ("DEFAULT_RATE", "variable", 9, 9),
        ("BURST", "variable", 10, 10),
        ("RateLimitExceeded", "class", 13, 14),
        ("Bucket", "class", 17, 47),
        ("Bucket.__post_init__", "method", 24, 27),
        ("Bucket._refill", "method", 29, 32),
        ("Bucket.take", "method", 34, 47),
        ("limited", "function", 50, 60),
        ("limited.decorate", "function", 53, 58),
        ("limited.decorate.wrapper", "function", 54, 56),
        ("drain", "function", 63, 71),
    ]
    take = symbol(parsed, "Bucket.take")
    assert take.parent == "Bucket"
    assert take.signature == "def take(self, tokens: int = 1, *, block: bool = True) -> bool:"
    assert take.docstring == "Take ``tokens`` from the bucket, waiting for them when ``block`` is true."
    assert symbol(parsed, "limited.decorate.wrapper").parent == "limited.decorate"
    bucket = symbol(parsed, "Bucket")
    assert bucket.signature == "class Bucket:"  # the decorator is in the range, not the signature
    assert bucket.docstring == "A token bucket refilled continuously at ``rate`` tokens per second."
    # a multi-line signature stops at the colon, before the comment that opens the body
    assert (
        symbol(parsed, "drain").signature
        == "async def drain(\n    bucket: Bucket,\n    count: int,\n) -> int:"
    )
    assert symbol(parsed, "drain").docstring == ""


def test_python_chunks_follow_definitions():
    parsed = parse_fixture("ratelimit.py")
    assert chunk_table(parsed) == [
        ("module", None, 1, 10),
        ("class", "RateLimitExceeded", 13, 14),
        ("class", "Bucket", 17, 47),
        ("function", "limited", 50, 60),
        ("function", "drain", 63, 71),
        ("module", None, 74, 75),
    ]
    lines = (FIXTURES / "ratelimit.py").read_text().split("\n")
    bucket = parsed.chunks[2]
    assert bucket.text == "\n".join(lines[16:47])
    assert bucket.language == "python"
    assert bucket.path == "ratelimit.py"


def test_python_references_cover_calls_types_and_imports():
    parsed = parse_fixture("ratelimit.py")
    references = {(r.name, r.line, r.kind) for r in parsed.references}
    assert ("dataclass", 7, "import") in references
    assert ("threading", 5, "import") in references
    assert ("dataclass", 17, "call") in references  # the decorator
    assert ("RateLimitExceeded", 37, "call") in references
    assert ("_refill", 40, "call") in references
    assert ("Bucket", 50, "type") in references
    assert ("Exception", 13, "type") in references
    # a definition's own name is not a reference to it
    assert not any(name == "take" and line == 34 for name, line, _ in references)


# -------------------------------------------------------------------------------- JavaScript / TypeScript


def test_javascript_symbols_and_chunks():
    parsed = parse_fixture("emitter.js")
    assert symbol_table(parsed) == [
        ("DEFAULT_DELAY", "variable", 5, 5),
        ("Emitter", "class", 11, 31),
        ("Emitter.on", "method", 14, 19),
        ("Emitter.off", "method", 21, 24),
        ("Emitter.emit", "method", 26, 30),
        ("debounce", "function", 34, 40),
        ("createSaver", "function", 43, 50),
        ("load", "function", 52, 55),
    ]
    assert symbol(parsed, "Emitter").docstring == "Tiny event emitter.\nListeners run in registration order."
    assert symbol(parsed, "Emitter").signature == "export class Emitter"
    assert symbol(parsed, "debounce").signature == "export function debounce(fn, delay = DEFAULT_DELAY)"
    assert symbol(parsed, "createSaver").signature == "export const createSaver = (dir, emitter) =>"
    assert symbol(parsed, "createSaver").docstring == "Persist a document to disk, debounced."
    assert symbol(parsed, "Emitter.on").signature == "on(event, listener)"
    assert chunk_table(parsed) == [
        ("module", None, 1, 5),
        ("class", "Emitter", 7, 31),  # with its JSDoc block
        ("function", "debounce", 33, 40),
        ("function", "createSaver", 42, 50),
        ("function", "load", 52, 55),
        ("module", None, 57, 57),
    ]
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("node:fs/promises", "import") in references
    assert ("readFile", "import") in references
    assert ("debounce", "call") in references
    assert ("writeFile", "call") in references


def test_typescript_symbols_and_chunks():
    parsed = parse_fixture("users.ts")
    assert symbol_table(parsed) == [
        ("User", "interface", 5, 9),
        ("UserId", "type", 11, 11),
        ("Role", "enum", 13, 16),
        ("UserService", "class", 19, 42),
        ("UserService.constructor", "method", 22, 22),
        ("UserService.get", "method", 25, 37),
        ("UserService.isAdmin", "method", 39, 41),
        ("Handlers", "namespace", 44, 51),
        ("Handlers.show", "function", 45, 50),
        ("formatUser", "function", 53, 54),
    ]
    assert symbol(parsed, "UserService.get").signature == "async get(id: UserId): Promise<User | undefined>"
    assert symbol(parsed, "UserService.get").docstring == "Fetch one user by id."
    assert symbol(parsed, "User").docstring == "Shape of a stored user."
    assert chunk_table(parsed) == [
        ("module", None, 1, 2),
        ("interface", "User", 4, 9),
        ("module", None, 11, 11),  # a type alias stays with the module code
        ("enum", "Role", 13, 16),
        ("class", "UserService", 18, 42),
        ("namespace", "Handlers", 44, 51),
        ("function", "formatUser", 53, 54),
    ]
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("./cache", "import") in references
    assert ("Cache", "call") in references  # new Cache<...>()
    assert ("Promise", "type") in references


def test_tsx_components_parse_with_the_tsx_grammar():
    source = textwrap.dedent(
        """\
        import React from "react";

        /** A greeting card. */
        export function Greeting({ name }: { name: string }) {
          return <Card title="hi"><Avatar user={name} /></Card>;
        }

        export const List = ({ items }: Props) => (
          <ul>
            {items.map((item) => <li key={item}>{item}</li>)}
          </ul>
        );
        """
    )
    parsed = parse_file("ui/Greeting.tsx", source)
    assert parsed.record.language == "tsx"
    assert symbol_table(parsed) == [("Greeting", "function", 4, 6), ("List", "function", 8, 12)]
    assert symbol(parsed, "Greeting").docstring == "A greeting card."
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("Card", "call") in references
    assert ("Avatar", "call") in references
    assert_covers_every_line(source, parsed.chunks)


# ----------------------------------------------------------------------------- Go / Rust / Java / C / C++


def test_go_methods_are_qualified_by_receiver():
    parsed = parse_fixture("queue.go")
    assert symbol_table(parsed) == [
        ("ErrClosed", "variable", 11, 11),
        ("Job", "struct", 14, 17),
        ("Handler", "interface", 20, 22),
        ("Queue", "struct", 25, 29),
        ("New", "function", 32, 34),
        ("Queue.Push", "method", 37, 45),
        ("Queue.Run", "method", 48, 62),
        ("Queue.Close", "method", 65, 72),
    ]
    run = symbol(parsed, "Queue.Run")
    assert run.parent == "Queue"
    assert run.signature == "func (q *Queue) Run(ctx context.Context, h Handler) error"
    assert run.docstring == "Run hands jobs to h until ctx is done or the queue is closed and drained."
    assert symbol(parsed, "Job").signature == "type Job struct"
    assert chunk_table(parsed) == [
        ("module", None, 1, 11),
        ("struct", "Job", 13, 17),
        ("interface", "Handler", 19, 22),
        ("struct", "Queue", 24, 29),
        ("function", "New", 31, 34),
        ("method", "Queue.Push", 36, 45),
        ("method", "Queue.Run", 47, 62),
        ("method", "Queue.Close", 64, 72),
    ]
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("context", "import") in references
    assert ("Handle", "call") in references
    assert ("Job", "type") in references


def test_rust_impl_methods_are_qualified_by_type():
    parsed = parse_fixture("lru.rs")
    assert symbol_table(parsed) == [
        ("CacheError", "enum", 8, 11),
        ("Lru", "struct", 14, 18),
        ("Weigh", "trait", 21, 23),
        ("Weigh.weight", "method", 22, 22),
        ("Lru.new", "method", 27, 29),
        ("Lru.get", "method", 31, 38),
        ("Lru.insert", "method", 41, 51),
        ("Lru.used", "method", 53, 55),
        ("Lru.evict_oldest", "method", 57, 62),
        ("CacheError.fmt", "method", 66, 70),
    ]
    assert symbol(parsed, "Lru.new").docstring == "An empty cache holding at most `capacity` units."
    assert symbol(parsed, "Lru.new").signature == "pub fn new(capacity: usize) -> Self"
    assert symbol(parsed, "Lru.new").parent == "Lru"
    assert symbol(parsed, "CacheError").docstring == "Errors returned by [`Lru::insert`]."
    assert chunk_table(parsed) == [
        ("module", None, 1, 4),
        ("enum", "CacheError", 6, 11),  # with its doc comment and #[derive]
        ("struct", "Lru", 13, 18),
        ("trait", "Weigh", 20, 23),
        ("impl", "Lru", 25, 63),
        ("impl", "CacheError", 65, 71),
    ]
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("HashMap", "import") in references
    assert ("evict_oldest", "call") in references
    assert ("write", "call") in references  # a macro


def test_java_nested_types_and_methods():
    parsed = parse_fixture("Inventory.java")
    assert symbol_table(parsed) == [
        ("Inventory", "class", 10, 51),
        ("Inventory.OutOfStock", "class", 14, 18),
        ("Inventory.OutOfStock.OutOfStock", "method", 15, 17),
        ("Inventory.Listener", "interface", 20, 22),
        ("Inventory.Listener.changed", "method", 21, 21),
        ("Inventory.Inventory", "method", 26, 28),
        ("Inventory.restock", "method", 31, 34),
        ("Inventory.reserve", "method", 37, 45),
        ("Inventory.level", "method", 47, 50),
    ]
    assert symbol(parsed, "Inventory").docstring == "Stock levels per product."
    assert symbol(parsed, "Inventory.reserve").docstring == "Reserve units, failing if too few are left."
    # the annotation is part of the range but not of the signature
    assert symbol(parsed, "Inventory.level").signature == "public Optional<Integer> level(String sku)"
    assert chunk_table(parsed) == [("module", None, 1, 5), ("class", "Inventory", 7, 51)]
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("java.util.Optional", "import") in references
    assert ("OutOfStock", "call") in references


def test_c_functions_structs_and_macros():
    parsed = parse_fixture("ring.c")
    assert symbol_table(parsed) == [
        ("RING_MIN", "macro", 6, 6),
        ("ring_t", "struct", 8, 13),
        ("stats", "struct", 15, 18),
        ("ring_new", "function", 23, 36),
        ("ring_used", "function", 38, 41),
        ("ring_write", "function", 44, 55),
        ("ring_free", "function", 57, 61),
    ]
    assert symbol(parsed, "ring_new").signature == "ring_t *ring_new(size_t size)"
    assert symbol(parsed, "ring_new").docstring == "Allocate a ring holding up to size bytes."
    assert chunk_table(parsed) == [
        ("module", None, 1, 6),
        ("struct", "ring_t", 8, 13),
        ("struct", "stats", 15, 18),
        ("module", None, 20, 20),
        ("function", "ring_new", 22, 36),
        ("function", "ring_used", 38, 41),
        ("function", "ring_write", 43, 55),
        ("function", "ring_free", 57, 61),
    ]
    references = {(r.name, r.kind) for r in parsed.references}
    assert ("ring.h", "import") in references
    assert ("ring_used", "call") in references


def test_cpp_namespaces_classes_and_out_of_line_methods():
    parsed = parse_fixture("counters.cpp")
    assert symbol_table(parsed) == [
        ("metrics", "namespace", 8, 54),
        ("metrics.Counter", "class", 11, 26),
        ("metrics.Counter.Counter", "method", 13, 13),
        ("metrics.Counter.increment", "method", 15, 18),
        ("metrics.Counter.value", "method", 20, 20),  # the declaration
        ("metrics.Counter.value", "method", 28, 31),  # the out-of-line definition
        ("metrics.Snapshot", "struct", 33, 35),
        ("metrics.counter", "function", 38, 45),
        ("metrics.each", "function", 47, 52),
    ]
    assert symbol(parsed, "metrics.Counter").docstring == "A monotonically increasing counter."
    assert (
        symbol(parsed, "metrics.each").signature
        == "template <typename F>\nvoid each(const Snapshot &snapshot, F visit)"
    )
    assert [s.parent for s in parsed.symbols if s.qualified_name == "metrics.Counter.value"] == [
        "metrics.Counter",
        "metrics.Counter",
    ]
    # small budget: the namespace collapses, its members get chunks of their own
    small = parse_fixture("counters.cpp", chunk_tokens=100)
    table = chunk_table(small)
    assert ("class", "metrics", 8, 54) in [(k, s, a, b) for k, s, a, b in table if s == "metrics"][:1]
    assert ("method", "metrics.Counter.value", 28, 31) in table
    assert ("function", "metrics.counter", 37, 45) in table


# ---------------------------------------------------------------------------------------------- splitting


def test_a_large_class_becomes_its_collapsed_form_plus_one_chunk_per_method():
    methods = "\n".join(
        f"    def method_{i}(self, value: int) -> int:\n"
        f'        """Method {i}."""\n'
        f"        total = value * {i}\n"
        f"        total += self.offset\n"
        f"        return total\n"
        for i in range(20)
    )
    source = f'class Big:\n    """A class too big for one chunk."""\n\n    offset = 3\n\n{methods}'
    parsed = parse_file("big.py", source, chunk_tokens=300)
    class_chunks = [c for c in parsed.chunks if c.kind == "class"]
    method_chunks = [c for c in parsed.chunks if c.kind == "method"]
    assert class_chunks and all(c.symbol == "Big" for c in class_chunks)
    collapsed = "\n".join(c.text for c in class_chunks)
    assert "offset = 3" in collapsed
    assert "total += self.offset" not in collapsed  # bodies elided
    for i in range(20):
        assert f"def method_{i}(self, value: int) -> int:" in collapsed
        assert f'"""Method {i}."""' in collapsed  # docstrings stay
    assert [c.symbol for c in method_chunks] == [f"Big.method_{i}" for i in range(20)]
    for i, chunk in enumerate(method_chunks):
        start = 6 + 6 * i
        assert (chunk.start_line, chunk.end_line) == (start, start + 4)
    assert all(estimate_tokens(c.text) <= 300 for c in parsed.chunks)
    assert_covers_every_line(source, parsed.chunks)


def _statement_bounds(source: str) -> tuple[set[int], set[int]]:
    starts, ends = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt):
            starts.add(node.lineno)
            ends.add(node.end_lineno)
    return starts, ends


def test_an_oversized_function_splits_into_blocks_on_statement_boundaries():
    body = []
    for i in range(40):
        body.append(f"    value_{i} = compute(items[{i}], scale={i})")
        body.append(f"    if value_{i} > limit:")
        body.append(f"        report(value_{i}, 'over the limit', index={i})")
        body.append(f"        total += value_{i}")
    source = "def process(items, limit):\n    total = 0\n" + "\n".join(body) + "\n    return total\n"
    parsed = parse_file("process.py", source, chunk_tokens=120)
    blocks = [c for c in parsed.chunks if c.kind == "block"]
    assert len(blocks) > 3
    assert [c.kind for c in parsed.chunks] == ["block"] * len(blocks)
    assert all(c.symbol == "process" for c in blocks)
    # contiguous and non-overlapping, from the def line to the last line
    assert blocks[0].start_line == 1
    assert blocks[-1].end_line == source.count("\n")
    for previous, block in itertools.pairwise(blocks):
        assert block.start_line == previous.end_line + 1
    starts, ends = _statement_bounds(source)
    for block in blocks:
        assert block.start_line in starts, block
        assert block.end_line in ends, block
        assert estimate_tokens(block.text) <= 120
    # later blocks carry the signature so they stay findable, their lines stay their own
    assert blocks[0].text.startswith("def process(items, limit):\n    total = 0")
    lines = source.split("\n")
    for block in blocks[1:]:
        assert block.text.startswith("def process(items, limit):\n    ...\n")
        own = "\n".join(lines[block.start_line - 1 : block.end_line])
        assert block.text.endswith(own)


def test_oversized_braced_functions_split_too():
    statements = "\n".join(
        f"    if (ring->size > {i}) {{\n        ring->data[{i}] = buf[{i}];\n    }}" for i in range(60)
    )
    source = f"void fill(ring_t *ring, const unsigned char *buf)\n{{\n{statements}\n}}\n"
    parsed = parse_file("fill.c", source, chunk_tokens=100)
    blocks = [c for c in parsed.chunks if c.kind == "block"]
    assert len(blocks) > 3
    for previous, block in itertools.pairwise(blocks):
        assert block.start_line == previous.end_line + 1
    lines = source.split("\n")
    for block in blocks[1:]:
        assert lines[block.start_line - 1].lstrip().startswith("if (")  # a statement starts each block
    assert_covers_every_line(source, parsed.chunks)


@pytest.mark.parametrize("name", ALL_FIXTURES)
@pytest.mark.parametrize("chunk_tokens", [25, 60, 150, 400])
def test_every_non_blank_line_is_in_a_chunk_under_the_budget(name, chunk_tokens):
    text = (FIXTURES / name).read_text()
    parsed = parse_fixture(name, chunk_tokens)
    assert_covers_every_line(text, parsed.chunks)
    lines = text.split("\n")
    for chunk in parsed.chunks:
        if chunk.start_line != chunk.end_line or len(lines[chunk.start_line - 1]) <= chunk_tokens * 4:
            assert estimate_tokens(chunk.text) <= chunk_tokens, chunk
        if chunk.kind not in ("class", "block"):
            assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.language == parsed.record.language


def test_chunks_are_deterministic():
    first = parse_fixture("lru.rs", 60)
    second = parse_fixture("lru.rs", 60)
    assert [c.chunk_id for c in first.chunks] == [c.chunk_id for c in second.chunks]
    assert len({c.chunk_id for c in first.chunks}) == len(first.chunks)


# ---------------------------------------------------------------------------------------------- text


def test_markdown_is_chunked_by_headings():
    parsed = parse_fixture("guide.md", chunk_tokens=20)
    assert parsed.record.language == "markdown"
    assert chunk_table(parsed) == [
        ("text", "Swarm", 1, 3),
        ("text", "Swarm > Install", 5, 7),
        ("text", "Swarm > Install", 9, 12),  # the fenced block, its `#` line is no heading
        ("text", "Swarm > Usage > Editors", 14, 18),  # a bare heading goes with its first subsection
        ("text", "Swarm > Usage > Agents", 20, 22),
    ]
    assert symbol_table(parsed) == [
        ("Swarm", "section", 1, 22),
        ("Swarm > Install", "section", 5, 12),
        ("Swarm > Usage", "section", 14, 22),
        ("Swarm > Usage > Editors", "section", 16, 18),
        ("Swarm > Usage > Agents", "section", 20, 22),
    ]
    assert symbol(parsed, "Swarm > Install").docstring == "Run `pip install swarm-lsp`."
    assert parsed.record.outline == "# Swarm\n## Install\n## Usage\n### Editors\n### Agents"
    whole = parse_fixture("guide.md")
    assert chunk_table(whole) == [("text", "Swarm", 1, 22)]


def test_unknown_files_are_chunked_by_paragraphs():
    paragraphs = [f"Paragraph {i} " + "words " * 20 for i in range(6)]
    text = "\n\n".join(paragraphs) + "\n"
    parsed = parse_file("notes/plan.unknownext", text, chunk_tokens=80)
    assert parsed.record.language == "text"
    assert parsed.symbols == [] and parsed.references == []
    assert [(c.start_line, c.end_line) for c in parsed.chunks] == [(1, 3), (5, 7), (9, 11)]
    assert all(c.kind == "text" and c.symbol is None for c in parsed.chunks)


def test_a_huge_line_is_cut_into_pieces_under_the_budget():
    line = "x" * 5000
    for name in ("blob.txt", "bundle.min.js"):
        parsed = parse_file(name, f"{line}\n", chunk_tokens=100)
        assert len(parsed.chunks) == 13
        assert all(c.start_line == c.end_line == 1 for c in parsed.chunks)
        assert "".join(c.text for c in parsed.chunks) == line
        assert all(estimate_tokens(c.text) <= 100 for c in parsed.chunks)


# ---------------------------------------------------------------------------------------------- robustness


def test_invalid_utf8_is_replaced_not_fatal():
    data = b'def ok():\n    return "caf\xe9 \xff\xfe"\n\n\ndef also():\n    pass\n'
    parsed = parse_file("bad.py", data)
    assert [s.qualified_name for s in parsed.symbols] == ["ok", "also"]
    assert "\ufffd" in parsed.chunks[0].text
    assert parsed.record.sha256 == hashlib.sha256(data).hexdigest()
    assert parsed.record.size == len(data)


def test_syntax_errors_keep_the_symbols_still_found():
    python = (
        "def good(a):\n    return a\n\ndef broken(:\n    x = \n\n"
        "class Fine:\n    def m(self):\n        pass\n"
    )
    parsed = parse_file("broken.py", python)
    names = [s.qualified_name for s in parsed.symbols]
    assert "good" in names and "Fine.m" in names
    assert_covers_every_line(python, parsed.chunks)

    javascript = "function ok() { return 1; }\nfunction broken( {\n  let x = ;\n"
    parsed = parse_file("broken.js", javascript)
    assert "ok" in [s.qualified_name for s in parsed.symbols]
    assert_covers_every_line(javascript, parsed.chunks)


@pytest.mark.parametrize("name", ["empty.py", "empty.go", "empty.md", "empty.txt"])
@pytest.mark.parametrize("data", [b"", b"\n\n  \n", "\ufeff".encode()])
def test_empty_files_have_no_chunks(name, data):
    parsed = parse_file(name, data)
    assert parsed.chunks == []
    assert parsed.symbols == []


def test_the_record_describes_the_raw_bytes():
    data = (FIXTURES / "queue.go").read_bytes()
    parsed = parse_file("pkg/queue/queue.go", data, mtime_ns=123)
    record = parsed.record
    assert (record.path, record.language, record.size, record.mtime_ns) == (
        "pkg/queue/queue.go",
        "go",
        len(data),
        123,
    )
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert {c.path for c in parsed.chunks} == {"pkg/queue/queue.go"}
    assert {s.path for s in parsed.symbols} == {"pkg/queue/queue.go"}


def test_str_and_bytes_input_agree():
    text = (FIXTURES / "ratelimit.py").read_text()
    from_text = parse_file("r.py", text)
    from_bytes = parse_file("r.py", text.encode())
    assert from_text.record == from_bytes.record
    assert from_text.chunks == from_bytes.chunks


# ---------------------------------------------------------------------------------------------- outline


def test_python_outline_elides_bodies():
    outline = parse_fixture("ratelimit.py").record.outline
    assert outline.startswith('"""Token bucket rate limiting for the HTTP client."""')
    assert "import threading" in outline
    assert "DEFAULT_RATE = 10.0" in outline
    assert "class Bucket:" in outline
    assert "    rate: float = DEFAULT_RATE" in outline
    assert "    def take(self, tokens: int = 1, *, block: bool = True) -> bool:" in outline
    assert (
        '        """Take ``tokens`` from the bucket, waiting for them when ``block`` is true."""' in outline
    )
    assert "        ..." in outline
    assert "time.sleep" not in outline
    assert "self._refill(time.monotonic())" not in outline
    assert 'if __name__ == "__main__":\n    ...' in outline  # top-level statements keep their first line
    assert "print(drain)" not in outline


@pytest.mark.parametrize(
    ("name", "kept", "elided"),
    [
        (
            "queue.go",
            ["func (q *Queue) Run(ctx context.Context, h Handler) error {", "\tmu     sync.Mutex"],
            "ctx.Err()",
        ),
        (
            "lru.rs",
            ["    pub fn insert(&mut self, key: String, value: V) -> Result<(), CacheError> {"],
            "evict_oldest();",
        ),
        (
            "Inventory.java",
            ["    public int reserve(String sku, int count) {", "    public interface Listener {"],
            "throw new",
        ),
        (
            "emitter.js",
            ["export function debounce(fn, delay = DEFAULT_DELAY) {", "  on(event, listener) {"],
            "clearTimeout",
        ),
        (
            "users.ts",
            [
                "export interface User {",
                "  email?: string;",
                "  async get(id: UserId): Promise<User | undefined> {",
            ],
            "response.ok",
        ),
        (
            "ring.c",
            ["size_t ring_write(ring_t *ring, const unsigned char *buf, size_t len)", "    size_t head;"],
            "calloc",
        ),
        ("counters.cpp", ["class Counter {", "  void increment(long by = 1) {"], "registry.emplace"),
    ],
)
def test_outline_keeps_signatures_and_drops_bodies(name, kept, elided):
    outline = parse_fixture(name).record.outline
    for line in kept:
        assert line in outline.split("\n"), f"{line!r} not in outline:\n{outline}"
    assert elided not in outline
    assert "..." in outline


# ---------------------------------------------------------------------------------------------- speed


def test_a_two_thousand_line_file_parses_fast():
    functions = []
    for i in range(200):
        functions.append(
            f"def handler_{i}(request, retries=3):\n"
            f'    """Handle request {i}."""\n'
            f"    for attempt in range(retries):\n"
            f"        response = send(request, attempt=attempt, tag={i})\n"
            f"        if response.ok:\n"
            f"            return response.json()\n"
            f"        log.warning('retry %s', attempt)\n"
            f"    raise TimeoutError({i})\n"
        )
    source = "import logging\n\nlog = logging.getLogger(__name__)\n\n\n" + "\n\n".join(functions)
    assert source.count("\n") > 1800
    parse_file("warm.py", source)
    started = time.perf_counter()
    parsed = parse_file("handlers.py", source)
    elapsed = time.perf_counter() - started
    assert len(parsed.symbols) == 201
    assert elapsed < 0.5, f"{elapsed * 1000:.0f} ms"


def test_text_outlines():
    toml = '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 110\n'
    assert (
        parse_file("pyproject.toml", toml).record.outline
        == '[project]\nname = "x"\n[tool.ruff]\nline-length = 110'
    )
    prose = "Note: first line.\nSecond line.\n\nThird.\n"
    assert parse_file("notes.txt", prose).record.outline == "Note: first line.\nSecond line.\nThird."
    minified = "var a=" + "1+" * 2000 + "1;\n"
    outline = parse_file("bundle.min.js", minified).record.outline
    assert len(outline) <= 300 and outline.endswith("...")
