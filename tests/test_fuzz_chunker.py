"""Fuzzing the chunker and parsers, then a real index sync, with generated and corrupted source files.

hypothesis makes files for every extension the index knows: binary noise, brackets and definitions
nested thousands deep (on one line too), long lines, the repository's own fixtures corrupted
(truncated, bytes flipped, noise spliced in, line breaks turned into lone "\\r"), text in other
encodings and invalid UTF-8, NUL bytes. Properties:

- `parse_file` never raises; every chunk's lines lie in the file, every non-blank line lies in a
  chunk, and the chunks hold at most MAX_REPEAT times the file's text (no blow-up by nesting);
- an index sync of a workspace full of such files never fails: each file is indexed, or skipped
  with a reason that `Workspace.status()` and `swarm-lsp index --status` show;
- a 10 MB line is chunked in pieces (the languages that parse it in seconds) and, in a workspace,
  skipped as larger than the size cap, with that reason in `index --status`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_support import fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from swarm_lsp.code.languages import SPECS
from swarm_lsp.code.tokens import CHARS_PER_TOKEN
from swarm_lsp.config import load_settings
from swarm_lsp.index.chunker import parse_file
from swarm_lsp.index.code_chunks import MAX_REPEAT
from swarm_lsp.workspace import Workspace

FIXTURES = Path(__file__).parent / "fixtures" / "chunker"
SEEDS = sorted(FIXTURES.iterdir())
EXTENSIONS = sorted(
    {ext for spec in SPECS.values() for ext in spec.extensions}
    | {".md", ".mdx", ".txt", ".toml", ".json", ""}
)
CHUNK_TOKENS = 100
"""Small chunks, so that even small files are split and their pieces checked."""
OPENERS = (
    "(",
    "[",
    "{",
    "class A {",
    "namespace a {",
    "mod m {",
    "fn f() {",
    "struct S {",
    "function f() {",
    "<",
)
CLOSERS = {"(": ")", "[": "]", "<": ">"}
TEN_MB = 10_000_000


def nested(opener: str, depth: int, closed: bool, newlines: bool) -> str:
    closer = CLOSERS.get(opener, "}")
    joint = "\n" if newlines else ""
    return joint.join([opener] * depth) + (joint.join([closer] * depth) if closed else "")


def indented(depth: int, keyword: str) -> str:
    return (
        "".join(" " * level + f"{keyword} f{level}():\n" for level in range(depth)) + " " * depth + "pass\n"
    )


@st.composite
def corrupted_seed(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.integers(0, 6))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == 0:
            del data[at:]
        elif how == 1 and data:
            data[at] = draw(st.integers(0, 255))
        elif how == 2:
            data[at:at] = draw(st.binary(max_size=64))
        elif how == 3:
            data = data.replace(b"\n", b"\r")
        elif how == 4:
            data = data.replace(b"\n", b" ")  # one long line: minified
        elif how == 5:
            data = data[:at] + data[at // 2 :]  # a stretch repeated
        else:
            data[at:at] = b"\x00"
    return bytes(data)


def sources() -> st.SearchStrategy[bytes]:
    text = st.text(max_size=2000)
    return st.one_of(
        corrupted_seed(),
        corrupted_seed(),
        st.binary(max_size=20_000),
        st.binary(min_size=5_000, max_size=20_000),
        st.builds(
            lambda opener, depth, closed, newlines: nested(opener, depth, closed, newlines).encode(),
            st.sampled_from(OPENERS),
            st.one_of(st.integers(1, 100), st.integers(1000, 5000)),
            st.booleans(),
            st.booleans(),
        ),
        st.builds(
            lambda depth, keyword: indented(depth, keyword).encode(),
            st.one_of(st.integers(1, 20), st.integers(100, 300)),
            st.sampled_from(["def", "class"]),
        ),
        st.builds(
            lambda char, size: ("x = '" + char * size + "'\n").encode(),
            st.sampled_from("a(é😀{\t"),
            st.one_of(st.integers(1, 500), st.integers(50_000, 200_000)),
        ),
        st.builds(
            lambda value, codec: value.encode(codec, "replace"),
            text,
            st.sampled_from(["latin-1", "utf-16", "cp1252", "utf-8-sig", "utf-32"]),
        ),
        st.builds(
            lambda value: value.encode("utf-8", "surrogatepass"),
            st.text(alphabet=st.characters(exclude_categories=()), max_size=500),
        ),
        st.builds(lambda a, b: a + b, text.map(str.encode), st.binary(max_size=200)),
    )


def check_parsed(path: str, data: bytes) -> None:
    parsed = parse_file(path, data, chunk_tokens=CHUNK_TOKENS)
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = text.split("\n")
    covered: set[int] = set()
    for chunk in parsed.chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines), (
            path,
            chunk.start_line,
            chunk.end_line,
            len(lines),
        )
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    missing = [number for number, line in enumerate(lines, 1) if line.strip() and number not in covered]
    assert not missing, f"{path}: lines in no chunk: {missing[:10]}"
    total = sum(len(chunk.text) for chunk in parsed.chunks)
    assert total <= MAX_REPEAT * len(text) + CHUNK_TOKENS * CHARS_PER_TOKEN, (
        f"{path}: {total} chars of chunks from {len(text)}"
    )
    for symbol in parsed.symbols:
        assert 1 <= symbol.start_line <= symbol.end_line <= len(lines), (path, symbol)
    assert parsed.record.size == len(data)


# ------------------------------------------------------------------------------------- the chunker


@example(extension=".java", data=nested("class A {", 5000, True, False).encode())
@example(extension=".ts", data=nested("namespace a {", 5000, True, False).encode())
@example(extension=".cpp", data=nested("struct S {", 5000, True, True).encode())
@example(extension=".rs", data=nested("mod m {", 3000, False, False).encode())
@example(extension=".py", data=indented(300, "class").encode())
@given(extension=st.sampled_from(EXTENSIONS), data=sources())
@fuzz_settings(1500)
def test_parse_file_never_fails_and_its_chunks_cover_the_file(extension: str, data: bytes) -> None:
    check_parsed(f"pkg/fuzzed{extension}", data)


@pytest.mark.parametrize("extension", [".py", ".js", ".ts", ".go", ".rs", ".java", ".md", ".txt"])
def test_a_ten_megabyte_line_is_chunked_in_pieces(extension: str) -> None:
    """The C grammars are left out: on one 10 MB token-per-character line tree-sitter's C queries take
    minutes (a file that large is skipped by the index's size cap, tested below)."""
    data = ("x = '" + "a" * TEN_MB + "'\n").encode()
    parsed = parse_file(f"big{extension}", data, chunk_tokens=CHUNK_TOKENS)
    assert sum(len(chunk.text) for chunk in parsed.chunks) >= TEN_MB
    assert max(len(chunk.text) for chunk in parsed.chunks) <= CHUNK_TOKENS * CHARS_PER_TOKEN


# --------------------------------------------------------------------------------- a real index sync


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    base = tmp_path_factory.mktemp("chunker-fuzz")
    root = base / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "ok.py").write_text("def fine():\n    return 1\n")
    (root / "huge-line.py").write_bytes(b"x = '" + b"a" * TEN_MB + b"'\n")
    (root / os.fsdecode(b"name-\xff\xfe.py")).write_text("def odd_name():\n    return 2\n")
    (root / "noise.dat.txt").write_bytes(bytes(range(256)) * 40)
    settings = {"index": {"embedder": "none", "location": str(base / "index")}, "model": {"name": "bundled"}}
    made = Workspace(root, loaded=load_settings(root, settings, env={}, user_file=base / "none.toml"))
    yield made
    asyncio.run(made.aclose())


@st.composite
def file_sets(draw: st.DrawFn) -> dict[str, bytes]:
    count = draw(st.integers(1, 6))
    return {f"gen/f{number}{draw(st.sampled_from(EXTENSIONS))}": draw(sources()) for number in range(count)}


@given(files=file_sets())
@fuzz_settings(60)
def test_an_index_sync_never_fails_and_says_why_it_skips(
    workspace: Workspace, files: dict[str, bytes]
) -> None:
    generated = workspace.root / "gen"
    shutil.rmtree(generated, ignore_errors=True)
    generated.mkdir()
    for rel, data in files.items():
        (workspace.root / rel).write_bytes(data)
    report = workspace.index(embed=False)
    status = workspace.status()
    indexed = set(workspace.store.files())
    skipped = {item["path"]: item["reason"] for item in status.skipped}
    assert status.skipped_files == len(report.skipped) and status.skipped_files >= 3
    for rel in files:
        assert (rel in indexed) != (rel in skipped), (
            f"{rel}: indexed {rel in indexed}, skipped {skipped.get(rel)}"
        )
        assert rel not in skipped or skipped[rel].strip(), rel
    assert "pkg/ok.py" in indexed and "larger than" in skipped["huge-line.py"]
    assert "binary" in skipped["noise.dat.txt"] and "not valid UTF-8" in skipped["name-\\xff\\xfe.py"]


def test_index_status_names_each_skipped_file_and_why(workspace: Workspace) -> None:
    """Runs after the sync fuzzer (file order): what the last sync skipped, as the CLI shows it."""
    env = {**os.environ, "SWARM_LSP_CONFIG_FILE": str(workspace.root.parent / "none.toml")}
    env.update(SWARM_LSP_INDEX__EMBEDDER="none", SWARM_LSP_INDEX__LOCATION=workspace.settings.index.location)
    run = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "index", "--status", "--workspace", str(workspace.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "huge-line.py: larger than the 1000 kB cap" in run.stdout, run.stdout
    assert "noise.dat.txt: binary content" in run.stdout
    assert "name-\\xff\\xfe.py: its name is not valid UTF-8" in run.stdout
