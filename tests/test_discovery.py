from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from gguf_writer import llama_metadata, tiny_tensors, write_gguf

from swarm_lsp.models import discovery
from swarm_lsp.models.discovery import (
    OLLAMA_MODEL_LAYER,
    DiscoveryRoots,
    LocalModel,
    default_roots,
    discover,
)

DIGEST = "ab" * 32


def _small_gguf(path: Path, name: str = "Tiny") -> Path:
    return write_gguf(path, llama_metadata(name=name, vocab=8), tiny_tensors(vocab=8))


def _by_name(models: list[LocalModel]) -> dict[str, LocalModel]:
    return {model.name: model for model in models}


# --- Hugging Face cache -------------------------------------------------------------------------


def _hf_file(
    hub: Path, repo: str, filename: str, *, revision: str = "rev1", data: Path | None = None
) -> Path:
    """Lay a file out the way huggingface_hub does: the blob, and a snapshot symlink to it."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    blob = repo_dir / "blobs" / hashlib.sha256(f"{repo}/{filename}@{revision}".encode()).hexdigest()
    if data is None:
        _small_gguf(blob)
    else:
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data.read_bytes())
    link = repo_dir / "snapshots" / revision / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return blob


def test_huggingface_gguf_files(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    blob = _hf_file(hub, "bartowski/Tiny-GGUF", "Tiny-Q4_K_M.gguf")
    _hf_file(hub, "bartowski/Tiny-GGUF", "mmproj-Tiny-f16.gguf")
    _hf_file(hub, "org/Big-GGUF", "Q8_0/Big-Q8_0-00001-of-00002.gguf")
    _hf_file(hub, "org/Big-GGUF", "Q8_0/Big-Q8_0-00002-of-00002.gguf")
    (hub / "datasets--org--data" / "snapshots" / "r").mkdir(parents=True)

    models = _by_name(discover(roots=DiscoveryRoots(huggingface=(hub,))))

    assert set(models) == {
        "bartowski/Tiny-GGUF/Tiny-Q4_K_M.gguf",
        "org/Big-GGUF/Q8_0/Big-Q8_0-00001-of-00002.gguf",
    }
    tiny = models["bartowski/Tiny-GGUF/Tiny-Q4_K_M.gguf"]
    assert (tiny.source, tiny.format, tiny.repo, tiny.filename) == (
        "huggingface",
        "gguf",
        "bartowski/Tiny-GGUF",
        "Tiny-Q4_K_M.gguf",
    )
    assert tiny.path == blob.resolve()  # the blob, not the symlink
    assert tiny.size_bytes == blob.stat().st_size
    assert tiny.usable and tiny.info is not None and tiny.info.name == "Tiny"
    big = models["org/Big-GGUF/Q8_0/Big-Q8_0-00001-of-00002.gguf"]
    assert big.size_bytes == 2 * blob.stat().st_size  # both shards counted


def test_huggingface_mlx_and_safetensors_snapshots(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    for repo, config in [
        ("mlx-community/Qwen-4bit", {"model_type": "qwen2"}),
        ("someone/Qwen-mlx-q", {"model_type": "qwen2", "quantization": {"group_size": 64, "bits": 4}}),
        ("Qwen/Qwen-0.5B", {"model_type": "qwen2"}),
    ]:
        snapshot = hub / ("models--" + repo.replace("/", "--")) / "snapshots" / "abc"
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text(json.dumps(config))
        (snapshot / "model.safetensors").write_bytes(b"\0" * 100)
    plain = hub / "models--org--no-weights" / "snapshots" / "abc"
    plain.mkdir(parents=True)
    (plain / "config.json").write_text("{}")

    models = _by_name(discover(roots=DiscoveryRoots(huggingface=(hub,))))

    assert {name: m.format for name, m in models.items()} == {
        "mlx-community/Qwen-4bit": "mlx",
        "someone/Qwen-mlx-q": "mlx",
        "Qwen/Qwen-0.5B": "safetensors",
    }
    assert models["Qwen/Qwen-0.5B"].size_bytes > 100
    assert all(m.info is None and m.usable for m in models.values())


def test_huggingface_dangling_link_is_reported(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    blob = _hf_file(hub, "org/Half-GGUF", "Half-Q4_0.gguf")
    blob.unlink()

    (model,) = discover(roots=DiscoveryRoots(huggingface=(hub,)))

    assert not model.usable
    assert "missing" in (model.error or "")


# --- Ollama -------------------------------------------------------------------------------------


def _ollama_manifest(
    store: Path, registry: str, namespace: str, model: str, tag: str, manifest: object
) -> Path:
    path = store / "manifests" / registry / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return path


def _model_manifest(digest: str = DIGEST) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "0" * 64,
        },
        "layers": [
            {"mediaType": "application/vnd.ollama.image.projector", "digest": "sha256:" + "1" * 64},
            {"mediaType": OLLAMA_MODEL_LAYER, "digest": f"sha256:{digest}", "size": 1},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "2" * 64},
        ],
    }


def test_ollama_models_are_named_like_ollama_does(tmp_path: Path) -> None:
    store = tmp_path / "ollama"
    blob = _small_gguf(store / "blobs" / f"sha256-{DIGEST}")
    _ollama_manifest(store, "registry.ollama.ai", "library", "qwen2.5-coder", "7b", _model_manifest())
    _ollama_manifest(store, "registry.ollama.ai", "library", "qwen2.5-coder", "latest", _model_manifest())
    other = "cd" * 32
    _small_gguf(store / "blobs" / f"sha256-{other}", name="Other")
    _ollama_manifest(store, "registry.ollama.ai", "someone", "tiny", "q4", _model_manifest(other))
    third = "ef" * 32
    _small_gguf(store / "blobs" / f"sha256-{third}", name="Third")
    _ollama_manifest(store, "hf.co", "bartowski", "Tiny-GGUF", "Q4_K_M", _model_manifest(third))

    models = _by_name(discover(roots=DiscoveryRoots(ollama=(store,))))

    # Two tags of one blob are one model (dedup by file) with the second tag as an alias.
    assert set(models) == {"qwen2.5-coder:7b", "someone/tiny:q4", "hf.co/bartowski/Tiny-GGUF:Q4_K_M"}
    qwen = models["qwen2.5-coder:7b"]
    assert qwen.aliases == ["qwen2.5-coder:latest"]
    assert (qwen.source, qwen.format, qwen.path) == ("ollama", "gguf", blob.resolve())
    assert qwen.info is not None and qwen.info.architecture == "llama"
    other_info = models["someone/tiny:q4"].info
    assert other_info is not None and other_info.name == "Other"


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ("{not json", "not a readable Ollama manifest"),
        ({"layers": "nope"}, "not a readable Ollama manifest"),
        ({"layers": [{"mediaType": "application/vnd.ollama.image.license"}]}, "no application/vnd.ollama"),
        (_model_manifest(digest="../../../etc/passwd"), "not sha256"),
        (_model_manifest(digest="9" * 64), "missing"),
    ],
)
def test_broken_ollama_manifest_is_reported(tmp_path: Path, manifest: object, problem: str) -> None:
    store = tmp_path / "ollama"
    path = _ollama_manifest(store, "registry.ollama.ai", "library", "broken", "latest", manifest)

    (model,) = discover(roots=DiscoveryRoots(ollama=(store,)))

    assert model.name == "broken:latest"
    assert not model.usable
    assert problem in (model.error or "")
    assert str(path) in (model.error or "")


# --- LM Studio ----------------------------------------------------------------------------------


def test_lmstudio_models(tmp_path: Path) -> None:
    models_dir = tmp_path / "lmstudio"
    _small_gguf(models_dir / "lmstudio-community" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf")
    _small_gguf(models_dir / "lmstudio-community" / "Tiny-GGUF" / "mmproj-model-f16.gguf")
    mlx_dir = models_dir / "mlx-community" / "Tiny-4bit"
    mlx_dir.mkdir(parents=True)
    (mlx_dir / "config.json").write_text('{"quantization": {"bits": 4}}')
    (mlx_dir / "model.safetensors").write_bytes(b"\0" * 10)

    models = _by_name(discover(roots=DiscoveryRoots(lmstudio=(models_dir,))))

    assert set(models) == {"lmstudio-community/Tiny-GGUF/Tiny-Q4_K_M.gguf", "mlx-community/Tiny-4bit"}
    gguf = models["lmstudio-community/Tiny-GGUF/Tiny-Q4_K_M.gguf"]
    assert (gguf.source, gguf.format, gguf.repo) == ("lmstudio", "gguf", "lmstudio-community/Tiny-GGUF")
    assert models["mlx-community/Tiny-4bit"].format == "mlx"


# --- settings paths, bundled model, dedup -------------------------------------------------------


def test_settings_files_and_directories(tmp_path: Path) -> None:
    single = _small_gguf(tmp_path / "single" / "Solo-Q8_0.gguf")
    folder = tmp_path / "folder"
    _small_gguf(folder / "a" / "Alpha-Q4_0.gguf")
    _small_gguf(folder / ".hidden" / "Hidden.gguf")
    _small_gguf(folder / "a" / "b" / "c" / "d" / "TooDeep.gguf")
    _small_gguf(tmp_path / "outside" / "Linked.gguf")
    (folder / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    mlx_dir = folder / "Tiny-mlx"
    mlx_dir.mkdir()
    (mlx_dir / "config.json").write_text('{"quantization": {"bits": 4}}')
    (mlx_dir / "model.safetensors").write_bytes(b"\0")

    models = _by_name(discover([single, folder, tmp_path / "nope.gguf"], roots=DiscoveryRoots()))

    assert set(models) == {"Solo-Q8_0", "Alpha-Q4_0", "Tiny-mlx", "nope"}
    assert models["Tiny-mlx"].format == "mlx"
    assert all(m.source == "settings" for m in models.values())
    assert models["Solo-Q8_0"].usable
    assert "no such file" in (models["nope"].error or "")


def test_a_huge_settings_directory_is_not_searched_exhaustively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "MAX_ENTRIES_PER_ROOT", 3)
    for index in range(10):
        _small_gguf(tmp_path / "many" / f"m{index}.gguf")

    assert len(discover([tmp_path / "many"], roots=DiscoveryRoots())) == 3


def test_unreadable_gguf_is_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    cut = _small_gguf(tmp_path / "cut.gguf")
    cut.write_bytes(cut.read_bytes()[:100])

    models = _by_name(discover([bad, cut], roots=DiscoveryRoots()))

    assert "not a GGUF file" in (models["bad"].error or "")
    assert "truncated" in (models["cut"].error or "")
    assert models["bad"].info is None


def test_metadata_can_be_read_later(tmp_path: Path) -> None:
    path = _small_gguf(tmp_path / "lazy.gguf")

    (model,) = discover([path], roots=DiscoveryRoots(), read_metadata=False)

    assert model.info is None
    info = model.load_info()
    assert info is not None and model.info is info and info.vocab_size == 8


def test_bundled_comes_first_and_wins_duplicates(tmp_path: Path) -> None:
    bundled = _small_gguf(tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    link = tmp_path / "elsewhere" / "smol.gguf"
    link.parent.mkdir()
    link.symlink_to(bundled)

    models = discover([link, bundled], roots=DiscoveryRoots(bundled=bundled))

    assert len(models) == 1
    assert (models[0].name, models[0].source) == ("smollm2-135m-instruct", "bundled")
    assert models[0].aliases == ["smol", "SmolLM2-135M-Instruct.Q4_1"]


def test_same_file_in_two_stores_is_listed_once(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    blob = _hf_file(hub, "org/Tiny-GGUF", "Tiny.gguf")

    models = discover([blob], roots=DiscoveryRoots(huggingface=(hub,)))

    assert [m.source for m in models] == ["settings"]
    assert models[0].aliases == ["org/Tiny-GGUF/Tiny.gguf"]


def test_missing_roots_find_nothing(tmp_path: Path) -> None:
    roots = DiscoveryRoots(
        huggingface=(tmp_path / "no-hub",), ollama=(tmp_path / "no-ollama",), lmstudio=(tmp_path / "no-lms",)
    )
    assert discover(roots=roots) == []


def test_default_roots_follow_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"HF_HOME": str(tmp_path / "hf"), "OLLAMA_MODELS": str(tmp_path / "om")}

    roots = default_roots(env, home)

    assert roots.huggingface == (tmp_path / "hf" / "hub",)
    assert roots.ollama == (tmp_path / "om",)
    assert roots.lmstudio == (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")
    assert default_roots({"HF_HUB_CACHE": "/x/hub", "HF_HOME": "/y"}, home).huggingface == (Path("/x/hub"),)
    plain = default_roots({}, home)
    assert plain.huggingface == (home / ".cache" / "huggingface" / "hub",)
    assert plain.ollama[0] == home / ".ollama" / "models"


def test_default_discovery_finds_the_bundled_model(bundled_gguf: Path, tmp_path: Path) -> None:
    roots = DiscoveryRoots(bundled=default_roots({}, tmp_path).bundled)

    (model,) = discover(roots=roots)

    assert model.path == bundled_gguf.resolve()
    assert (model.source, model.format) == ("bundled", "gguf")
    assert model.info is not None and model.info.quantization == "Q4_1"
