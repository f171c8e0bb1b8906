"""The no-change manifest: written by a full sync, dropped by any write, trusted only for an identical disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from swarm_lsp.config import load_settings
from swarm_lsp.index import manifest
from swarm_lsp.index.ignore import workspace_rules
from swarm_lsp.workspace import Workspace

FILES = {
    "app/main.py": "def main():\n    return 1\n",
    "app/util.py": "def helper(x):\n    return x * 2\n",
    "README.md": "# app\n",
    "notes.txt": "\x00 not text",
}


def make(root: Path) -> Path:
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def open_ws(root: Path, data: Path, **index: object) -> Workspace:
    options = {"index": {"location": str(data), "embedder": "none", **index}}
    return Workspace(root, loaded=load_settings(root, options, env={}, user_file=data / "none.toml"))


def quick(ws: Workspace) -> manifest.Unchanged | None:
    snapshot = manifest.read(ws.data_dir)
    if snapshot is None:
        return None
    key = manifest.fingerprint_for(ws.root, ws.settings)
    return manifest.check_unchanged(workspace_rules(ws.root, ws.settings), snapshot, key)


def test_a_full_sync_writes_it_and_an_identical_disk_is_answered_from_it(tmp_path: Path) -> None:
    root = make(tmp_path / "repo")
    with open_ws(root, tmp_path / "data") as ws:
        ws.index()
        found = quick(ws)
        assert found is not None
        assert found.unchanged == 3
        assert found.skipped == [("notes.txt", "binary content")]
        assert found.status["files"] == 3 and found.status["watching"] is False


def test_any_change_on_disk_means_the_full_path(tmp_path: Path) -> None:
    root = make(tmp_path / "repo")
    with open_ws(root, tmp_path / "data") as ws:
        ws.index()
        (root / "app/util.py").write_text("def helper(x):\n    return x * 3\n")
        assert quick(ws) is None
        ws.index()
        (root / "app/new.py").write_text("X = 1\n")
        assert quick(ws) is None
        ws.index()
        (root / "app/new.py").unlink()
        assert quick(ws) is None
        ws.index()
        (root / "notes.txt").write_text("\x00 not text, larger")
        assert quick(ws) is None
        ws.index()
        (root / "link.py").symlink_to(root / "app/main.py")
        assert quick(ws) is None
        ws.index()
        assert quick(ws) is None  # a symlink is always checked by the full path


def test_every_write_to_the_index_drops_it(tmp_path: Path) -> None:
    root = make(tmp_path / "repo")
    with open_ws(root, tmp_path / "data") as ws:
        ws.index()
        assert manifest.manifest_path(ws.data_dir).exists()
        ws.update_buffer("app/main.py", "def main():\n    return 2\n")  # an editor's unsaved text
        assert not manifest.manifest_path(ws.data_dir).exists()
        ws.index()
        (root / "app/main.py").write_text("def main():\n    return 3\n")
        ws.sync_paths(["app/main.py"])  # what the watcher does: not a full scan, so no new manifest
        assert not manifest.manifest_path(ws.data_dir).exists()


def test_different_settings_mean_the_full_path(tmp_path: Path) -> None:
    root = make(tmp_path / "repo")
    with open_ws(root, tmp_path / "data") as ws:
        ws.index()
    with open_ws(root, tmp_path / "data", exclude=["README.md"]) as ws:
        assert quick(ws) is None
    with open_ws(root, tmp_path / "data", chunk_tokens=128) as ws:
        assert quick(ws) is None


def test_a_damaged_manifest_is_ignored(tmp_path: Path) -> None:
    root = make(tmp_path / "repo")
    with open_ws(root, tmp_path / "data") as ws:
        ws.index()
        manifest.manifest_path(ws.data_dir).write_text('{"version": 1, "files": ')
        assert manifest.read(ws.data_dir) is None


def test_cli_answers_a_no_change_rerun_without_opening_the_index(tmp_path: Path) -> None:
    root = make(tmp_path / "repo")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SWARM_LSP_CACHE_DIR": str(tmp_path / "cache"),
        "SWARM_LSP_CONFIG_FILE": str(tmp_path / "none.toml"),
        "SWARM_LSP_INDEX__EMBEDDER": "none",
    }
    script = (
        "import sys; from swarm_lsp.cli import main; code = main(sys.argv[1:]); "
        "print('LANCEDB-IMPORTED' if 'lancedb' in sys.modules else 'LANCEDB-NOT-IMPORTED', file=sys.stderr); "
        "sys.exit(code)"
    )

    def run() -> tuple[dict, str]:
        done = subprocess.run(
            [sys.executable, "-c", script, "index", "--json", "--workspace", str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr

    first, first_err = run()
    assert first["sync"]["parsed"] == 3 and "LANCEDB-IMPORTED" in first_err
    second, second_err = run()
    assert "LANCEDB-NOT-IMPORTED" in second_err
    assert set(second) == set(first) and set(second["status"]) == set(first["status"])
    assert set(second["sync"]) == set(first["sync"])
    assert (second["sync"]["parsed"], second["sync"]["unchanged"]) == (0, 3)
    assert second["sync"]["skipped"] == [{"path": "notes.txt", "reason": "binary content"}]
    assert second["status"]["files"] == first["status"]["files"] == 3
    (root / "app/main.py").write_text("def main():\n    return 42\n")
    third, third_err = run()
    assert third["sync"]["parsed"] == 1 and "LANCEDB-IMPORTED" in third_err
