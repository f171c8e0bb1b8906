"""`swarm-lsp doctor`: what this machine can run and why, as data (JSON) and as text."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from swarm_lsp import __version__
from swarm_lsp.basics import SwarmLspError
from swarm_lsp.config import LoadedSettings
from swarm_lsp.models.catalog import entry_for_file
from swarm_lsp.models.discovery import LocalModel
from swarm_lsp.models.hardware import HardwareProfile, Recommendation, fmt_bytes, recommend
from swarm_lsp.models.select import explain_misfit, plan_run, resolve_model, uses_remote


@dataclass
class DoctorReport:
    version: str
    hardware: HardwareProfile
    backends: dict[str, bool]
    local_models: list[LocalModel]
    recommendation: Recommendation
    recommended_on_disk: bool
    configured: dict[str, Any]
    settings_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "hardware": self.hardware.to_dict(),
            "backends": self.backends,
            "local_models": [_local_model_dict(model) for model in self.local_models],
            "recommendation": {**self.recommendation.to_dict(), "on_disk": self.recommended_on_disk},
            "configured": self.configured,
            "settings_files": self.settings_files,
        }


def _local_model_dict(model: LocalModel) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": model.name,
        "path": str(model.path),
        "format": model.format,
        "source": model.source,
        "size_bytes": model.size_bytes,
    }
    if model.info is not None:
        data.update(
            architecture=model.info.architecture,
            parameters=model.info.parameter_count,
            quantization=model.info.quantization,
            context_length=model.info.context_length,
        )
    if model.error:
        data["error"] = model.error
    return data


def available_backends() -> dict[str, bool]:
    """Which backend libraries can be imported here (checked without importing them)."""
    return {
        "llamacpp": importlib.util.find_spec("llama_cpp") is not None,
        "mlx": importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None,
        "remote": True,
    }


def diagnose(loaded: LoadedSettings) -> DoctorReport:
    """The report for this machine: its hardware, and the models found on it."""
    from swarm_lsp.models.discovery import discover
    from swarm_lsp.models.hardware import detect

    return build_report(loaded, detect(), discover(loaded.settings.model.search_paths))


def build_report(loaded: LoadedSettings, profile: HardwareProfile, local: list[LocalModel]) -> DoctorReport:
    settings = loaded.settings
    recommendation = recommend(profile)
    on_disk = any(
        (match := entry_for_file(model.path.name if model.format == "gguf" else model.name)) is not None
        and match[0] is recommendation.entry
        for model in local
    )
    configured: dict[str, Any] = {"name": settings.model.name, "backend": settings.model.backend}
    if uses_remote(settings):
        configured.update(backend="remote", base_url=settings.remote.base_url, model=settings.remote.model)
    else:
        try:
            model = resolve_model(settings, profile, local)
            run = plan_run(settings, profile, model)
        except SwarmLspError as error:
            configured["error"] = str(error)
        else:
            configured.update(
                resolved=model.name,
                path=str(model.path),
                why=model.why,
                backend=run.backend,
                context=run.context,
                trained_context=model.trained_context,
                voters=run.voters,
                fits=run.fits,
                memory=None
                if run.plan is None
                else {"total": run.plan.total, "explained": run.plan.explain()},
                budget=run.budget,
            )
            if not run.fits:
                configured["advice"] = explain_misfit(run, recommendation)
    return DoctorReport(
        version=__version__,
        hardware=profile,
        backends=available_backends(),
        local_models=local,
        recommendation=recommendation,
        recommended_on_disk=on_disk,
        configured=configured,
        settings_files=[str(path) for path in loaded.files],
    )


def render_text(report: DoctorReport) -> str:
    hw = report.hardware
    lines = [f"swarm-lsp {report.version} doctor", "", "Machine"]
    lines.append(f"  {hw.os} {hw.arch}, {hw.physical_cores} physical / {hw.logical_cores} logical cores")
    lines.append(f"  RAM {fmt_bytes(hw.ram_total)} total, {fmt_bytes(hw.ram_available)} available")
    if hw.gpus:
        for gpu in hw.gpus:
            lines.append(
                f"  GPU {gpu.name} ({gpu.vendor}): {fmt_bytes(gpu.memory_total)} total, "
                f"{fmt_bytes(gpu.memory_free)} free" + (" (unified with RAM)" if hw.unified_memory else "")
            )
    else:
        lines.append("  GPU none found (models run on the CPU)")
    lines.extend(f"  note: {note}" for note in hw.notes)
    lines.append(f"  Model memory budget {fmt_bytes(hw.memory_budget())} = {hw.budget_rule()}")
    backends = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in report.backends.items())
    lines += ["", f"Backends: {backends}", "", "Models on disk"]
    if not report.local_models:
        lines.append("  none")
    for model in report.local_models:
        detail = ""
        if model.info is not None:
            params = model.info.parameter_count / 1e6
            detail = (
                f", {model.info.architecture}, {params:.0f}M params, {model.info.quantization}, "
                f"context {model.info.context_length}"
            )
        if model.error:
            detail += f", unreadable: {model.error}"
        lines.append(f"  {model.name} [{model.format}, {model.source}] {fmt_bytes(model.size_bytes)}{detail}")
        lines.append(f"      {model.path}")
    rec = report.recommendation
    lines += ["", "Recommended for this machine"]
    lines.append(f"  {rec.entry.name} {rec.variant.quant} ({rec.variant.format})")
    lines.append(f"  voters {rec.voters} (up to {rec.voters_fit} fit), context {rec.context} tokens")
    lines.append(f"  memory: {rec.plan.explain()} of {fmt_bytes(rec.budget)}")
    lines.extend(f"  why: {reason}" for reason in rec.reasons)
    if not report.recommended_on_disk:
        lines.append(
            f"  not on disk: `swarm-lsp models pull {rec.entry.name}:{rec.variant.quant}` downloads it"
        )
    conf = report.configured
    lines += ["", f"Configured model (model.name = {conf['name']!r}, backend {conf['backend']})"]
    if "error" in conf:
        lines.append(f"  problem: {conf['error']}")
    elif conf["backend"] == "remote" and "resolved" not in conf:
        lines.append(f"  remote server {conf['base_url']} model {conf['model'] or '(its first)'}")
    else:
        lines.append(f"  {conf['resolved']} ({conf['why']})")
        lines.append(f"      {conf['path']}")
        lines.append(
            f"  runs on {conf['backend']}, context {conf['context']} of {conf['trained_context']} trained, "
            f"{conf['voters']} voters"
        )
        if conf.get("memory"):
            verdict = "fits" if conf["fits"] else "DOES NOT FIT"
            lines.append(f"  {verdict}: {conf['memory']['explained']} of {fmt_bytes(conf['budget'])}")
        if conf.get("advice"):
            lines.append(f"  {conf['advice']}")
    files = ", ".join(report.settings_files) or "none (defaults)"
    lines += ["", f"Settings files: {files}"]
    return "\n".join(lines)
