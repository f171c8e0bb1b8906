from __future__ import annotations

from pathlib import Path

import pytest

from swarm_lsp.config import ConfigError, load_settings, workspace_data_dir


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user" / "config.toml"
    path.parent.mkdir()
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


def load(workspace: Path, user_file: Path, env: dict[str, str] | None = None, editor: dict | None = None):
    return load_settings(workspace, editor, env=env or {}, user_file=user_file)


def test_defaults_when_nothing_is_configured(workspace: Path, user_file: Path) -> None:
    loaded = load(workspace, user_file)
    assert loaded.settings.model.name == "auto"
    assert loaded.settings.swarm.voters == 0
    assert loaded.files == []
    assert loaded.sources == {}


def test_each_layer_overrides_the_one_before(workspace: Path, user_file: Path) -> None:
    user_file.write_text(
        '[swarm]\nvoters = 2\ntemperature = 0.1\nmax_tokens = 100\ntimeout = 10\n[model]\nname = "bundled"\n'
    )
    (workspace / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.swarm-lsp.swarm]\ntemperature = 0.2\nmax_tokens = 200\ntimeout = 20\n'
    )
    (workspace / ".swarm-lsp.toml").write_text("[swarm]\nmax_tokens = 300\ntimeout = 30\n")
    env = {"SWARM_LSP_SWARM__TIMEOUT": "40", "SWARM_LSP_MODEL__SEARCH_PATHS": '["/a", "/b"]'}
    loaded = load(workspace, user_file, env, editor={"swarm": {"strategy": "medoid"}})
    swarm = loaded.settings.swarm
    assert (swarm.voters, swarm.temperature, swarm.max_tokens, swarm.timeout) == (2, 0.2, 300, 40.0)
    assert swarm.strategy == "medoid"
    assert loaded.settings.model.name == "bundled"
    assert loaded.settings.model.search_paths == ["/a", "/b"]
    assert loaded.sources["swarm.voters"] == str(user_file)
    assert loaded.sources["swarm.temperature"] == f"[tool.swarm-lsp] in {workspace / 'pyproject.toml'}"
    assert loaded.sources["swarm.max_tokens"] == str(workspace / ".swarm-lsp.toml")
    assert loaded.sources["swarm.timeout"] == "environment variable SWARM_LSP_SWARM__TIMEOUT"
    assert loaded.sources["swarm.strategy"] == "editor initializationOptions"
    assert loaded.files == [user_file, workspace / "pyproject.toml", workspace / ".swarm-lsp.toml"]


def test_invalid_value_names_file_key_value_and_what_is_allowed(workspace: Path, user_file: Path) -> None:
    (workspace / ".swarm-lsp.toml").write_text("[swarm]\nvoters = -3\n")
    with pytest.raises(ConfigError) as caught:
        load(workspace, user_file)
    message = str(caught.value)
    assert str(workspace / ".swarm-lsp.toml") in message
    assert "swarm.voters = -3" in message
    assert "0 (automatic) to 64" in message


def test_invalid_choice_lists_the_choices(workspace: Path, user_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(workspace, user_file, env={"SWARM_LSP_MODEL__BACKEND": "cuda"})
    message = str(caught.value)
    assert "environment variable SWARM_LSP_MODEL__BACKEND" in message
    assert "'cuda'" in message
    assert "auto, llamacpp, mlx, remote" in message


def test_unknown_key_is_reported_with_a_suggestion(workspace: Path, user_file: Path) -> None:
    (workspace / ".swarm-lsp.toml").write_text("[swarm]\nvotrs = 3\n")
    with pytest.raises(ConfigError) as caught:
        load(workspace, user_file)
    message = str(caught.value)
    assert "unknown setting 'swarm.votrs'" in message
    assert "Did you mean 'swarm.voters'?" in message
    assert str(workspace / ".swarm-lsp.toml") in message


def test_unknown_section_is_reported(workspace: Path, user_file: Path) -> None:
    user_file.write_text("[modle]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'modle'.*Did you mean \[model\]"):
        load(workspace, user_file)


def test_broken_toml_names_the_file(workspace: Path, user_file: Path) -> None:
    (workspace / ".swarm-lsp.toml").write_text("[swarm\nvoters = 3\n")
    with pytest.raises(ConfigError, match=r"\.swarm-lsp\.toml is not valid TOML"):
        load(workspace, user_file)


def test_malformed_environment_variable_is_explained(workspace: Path, user_file: Path) -> None:
    with pytest.raises(ConfigError, match="SWARM_LSP_VOTERS does not name a setting"):
        load(workspace, user_file, env={"SWARM_LSP_VOTERS": "3"})


def test_reserved_environment_variables_are_not_settings(workspace: Path, user_file: Path) -> None:
    loaded = load(
        workspace, user_file, env={"SWARM_LSP_CACHE_DIR": "/tmp/x", "SWARM_LSP_CONFIG_FILE": "/tmp/y"}
    )
    assert loaded.sources == {}


def test_editor_options_with_wrong_type_are_reported(workspace: Path, user_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"editor initializationOptions: swarm.temperature = 'hot'"):
        load(workspace, user_file, editor={"swarm": {"temperature": "hot"}})


def test_workspace_data_dir_is_outside_the_repository_and_stable(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SWARM_LSP_CACHE_DIR", str(tmp_path / "cache"))
    first = workspace_data_dir(workspace)
    assert first == workspace_data_dir(workspace / ".")
    assert not first.is_relative_to(workspace)
    assert first.is_relative_to(tmp_path / "cache")
    assert first != workspace_data_dir(tmp_path)
