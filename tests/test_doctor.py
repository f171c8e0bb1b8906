from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarm_lsp.config import Settings, load_settings
from swarm_lsp.doctor import build_report, render_text
from swarm_lsp.models.base import DoesNotFit, ModelNotFound
from swarm_lsp.models.discovery import DiscoveryRoots, discover
from swarm_lsp.models.hardware import GIB, HardwareProfile, detect
from swarm_lsp.models.select import open_backend, plan_run, resolve_model

CI_BOX = HardwareProfile("Linux", "x86_64", 2, 2, 24 * GIB, 23 * GIB)
TINY = HardwareProfile("Linux", "x86_64", 1, 1, 2 * GIB, int(2.2 * GIB))


@pytest.fixture
def bundled_only(bundled_gguf: Path) -> list:
    return discover(roots=DiscoveryRoots(bundled=bundled_gguf))


def settings(**sections: dict) -> Settings:
    return Settings.model_validate(sections)


def test_auto_picks_the_bundled_model_when_it_is_all_there_is(bundled_only: list) -> None:
    model = resolve_model(settings(), CI_BOX, bundled_only)
    assert model.source == "bundled"
    assert model.arch is not None and model.arch.layers == 30
    run = plan_run(settings(), CI_BOX, model)
    assert run.backend == "llamacpp"
    assert run.context == 4096 and run.voters == 5
    assert run.fits


def test_explicit_context_and_voters_are_honoured(bundled_only: list) -> None:
    chosen = settings(model={"name": "bundled", "context_length": 2048}, swarm={"voters": 3})
    run = plan_run(chosen, CI_BOX, resolve_model(chosen, CI_BOX, bundled_only))
    assert (run.context, run.voters) == (2048, 3)


def test_missing_model_path_names_it_and_suggests_doctor(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFound) as caught:
        resolve_model(settings(model={"path": str(missing)}), CI_BOX, [])
    assert str(missing) in str(caught.value)
    assert "swarm-lsp doctor" in str(caught.value)


def test_catalog_model_not_on_disk_suggests_pull(bundled_only: list) -> None:
    with pytest.raises(ModelNotFound, match=r"swarm-lsp models pull qwen2\.5-coder-7b-instruct"):
        resolve_model(settings(model={"name": "qwen2.5-coder-7b-instruct"}), CI_BOX, bundled_only)


def test_unknown_model_name_lists_what_was_found(bundled_only: list) -> None:
    with pytest.raises(ModelNotFound, match="smollm2-135m-instruct"):
        resolve_model(settings(model={"name": "gpt-9"}), CI_BOX, bundled_only)


def test_a_model_that_does_not_fit_says_by_how_much_and_what_fits(bundled_gguf: Path) -> None:
    huge = settings(model={"path": str(bundled_gguf), "context_length": 8192}, swarm={"voters": 16})
    with pytest.raises(DoesNotFit) as caught:
        open_backend(huge, TINY)
    message = str(caught.value)
    assert "does not fit" in message
    assert "short by" in message
    assert "KV cache" in message
    assert "which fits" in message or "smallest" in message


def test_report_as_text_and_json(bundled_only: list, tmp_path: Path) -> None:
    loaded = load_settings(tmp_path, env={}, user_file=tmp_path / "none.toml")
    report = build_report(loaded, CI_BOX, bundled_only)
    text = render_text(report)
    for expected in ("2 physical", "Models on disk", "smollm2-135m-instruct", "Recommended", "fits:"):
        assert expected in text
    data = report.to_dict()
    assert data["configured"]["fits"] is True
    assert data["recommendation"]["voters"] == 5
    assert data["recommendation"]["on_disk"] is False
    assert data["local_models"][0]["quantization"] == "Q4_1"
    json.dumps(data)


def test_doctor_command_prints_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "doctor", "--json", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["hardware"]["physical_cores"] == detect().physical_cores
    assert any(model["source"] == "bundled" for model in data["local_models"])
    assert "explained" in data["recommendation"]["memory"]


def test_doctor_reports_a_settings_error_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / ".swarm-lsp.toml").write_text("[swarm]\nvoters = 'many'\n")
    result = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "doctor", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert ".swarm-lsp.toml: swarm.voters = 'many'" in result.stderr


def test_models_command_lists_catalog_and_local(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "models", "--json", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    names = {entry["name"] for entry in data["catalog"]}
    assert {"smollm2-135m-instruct", "qwen2.5-coder-32b-instruct"} <= names
    assert any(entry["variants"][0]["format"] in {"gguf", "mlx"} for entry in data["catalog"])
    assert any(model["source"] == "bundled" for model in data["local"])


def test_pull_of_an_unknown_name_fails_without_network() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarm_lsp", "models", "pull", "gpt-9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not in the catalog" in result.stderr
