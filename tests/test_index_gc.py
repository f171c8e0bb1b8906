"""`swarm-lsp index --gc`: the index data of workspaces that no longer exist is removed, the rest kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SWARM_LSP = str(Path(sys.executable).with_name("swarm-lsp"))


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWARM_LSP, *args], env=env, capture_output=True, text=True, timeout=120)


def test_gc_removes_the_data_of_deleted_workspaces_only(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = dict(
        os.environ,
        SWARM_LSP_CACHE_DIR=str(cache),
        SWARM_LSP_CONFIG_FILE=str(tmp_path / "none.toml"),
        SWARM_LSP_INDEX__EMBEDDER="none",
    )
    roots = {name: tmp_path / name for name in ("kept", "deleted")}
    for root in roots.values():
        (root / "pkg").mkdir(parents=True)
        (root / "pkg" / "a.py").write_text("def f():\n    return 1\n")
        done = run("index", "--workspace", str(root), env=env)
        assert done.returncode == 0, done.stderr
    folders = sorted((cache / "workspaces").iterdir())
    assert len(folders) == 2 and all((folder / "workspace.json").is_file() for folder in folders)
    legacy = cache / "workspaces" / "old-0123456789abcdef"
    (legacy / "index").mkdir(parents=True)
    shutil.rmtree(roots["deleted"])

    dry = run("index", "--gc", "--dry-run", "--json", env=env)
    report = json.loads(dry.stdout)
    assert [root for _folder, root, _size in report["removed"]] == [str(roots["deleted"])]
    assert report["kept"] == 1 and report["unknown"] == [str(legacy)] and report["freed_bytes"] > 0
    assert len(list((cache / "workspaces").iterdir())) == 3, "a dry run removes nothing"

    done = run("index", "--gc", env=env)
    assert done.returncode == 0 and "removed 1 folder(s)" in done.stdout and "no longer exists" in done.stdout
    assert "does not record its workspace" in done.stdout
    left = {folder.name for folder in (cache / "workspaces").iterdir()}
    assert legacy.name in left and len(left) == 2
    status = run("index", "--status", "--workspace", str(roots["kept"]), env=env)
    assert status.returncode == 0 and "files" in status.stdout, "the kept workspace's index still works"
    misuse = run("index", "--dry-run", env=env)
    assert misuse.returncode == 2 and "--dry-run goes with --gc" in misuse.stderr
