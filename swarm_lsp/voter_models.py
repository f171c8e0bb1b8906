"""Models opened beside the chat model: one for inline completion, more that vote (`swarm.models`).

A vote over several models weighs each candidate by its model's quality (`model_weight`): the
single-sample accuracy measured by bench/swarm_quality.py for the models it ran (docs/benchmarks.md),
else a prior from the model's family and size (federation/capability.py), scaled to the same range.
"""

from __future__ import annotations

from swarm_lsp.config import Settings
from swarm_lsp.federation.capability import quality_weight
from swarm_lsp.models.base import Backend

MEASURED_ACCURACY = {
    "smollm2-135m-instruct": 0.37,
    "gemma-3-270m": 0.15,
}
"""Single-sample accuracy (voter 0, greedy) on bench/swarm_quality.py's 60 questions, by model name
(docs/benchmarks.md, "Swarm: quality", 2026-11-30)."""
MIN_WEIGHT = 0.05
"""A model never right on the benchmark still counts a little."""
PRIOR_TO_ACCURACY = 0.25
"""A prior weight of 1.0 counts as this accuracy (the bundled model's measured range)."""


def open_named_model(settings: Settings, name: str, *, voters: int) -> Backend:
    """The model `name` (a catalog or local name, or a .gguf path), planned for `voters` sequences."""
    from swarm_lsp.models.hardware import detect
    from swarm_lsp.models.select import open_backend

    path_given = name.endswith(".gguf") or "/" in name
    model = settings.model.model_copy(
        update={"name": "auto" if path_given else name, "path": name if path_given else ""}
    )
    swarm = settings.swarm.model_copy(update={"voters": voters})
    backend, _plan = open_backend(settings.model_copy(update={"model": model, "swarm": swarm}), detect())
    return backend


def model_weight(model: str) -> float:
    """How much one candidate of `model` counts in a vote over several models."""
    key = model.lower().replace("_", "-")
    for name, accuracy in MEASURED_ACCURACY.items():
        if name in key:
            return max(MIN_WEIGHT, accuracy)
    return round(PRIOR_TO_ACCURACY * quality_weight(model), 3)
