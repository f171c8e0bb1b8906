"""How much a peer's model is worth in a vote: a quality weight per model family, scaled by size.

The weights are coarse priors from public code benchmarks (a coder model beats a general one of
its size; a base model answering through a completion prompt is weaker), not measurements of this
project; docs/swarm.md says how they are used. Unknown families get `UNKNOWN_FAMILY`.
"""

from __future__ import annotations

import math
import re

FAMILY_WEIGHTS: tuple[tuple[str, float], ...] = (
    (r"qwen.*coder|deepseek.*coder|codestral|starcoder|codegemma", 1.2),
    (r"qwen|llama-?3|mistral|phi-?[34]|gemma-?[23]-?(?!270m)", 1.0),
    (r"codellama|llama|deepseek|granite", 0.9),
    (r"gemma", 0.7),
    (r"smollm", 0.6),
)
UNKNOWN_FAMILY = 0.8
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bm])\b", re.I)


def params_from_name(name: str) -> float:
    """Billions of parameters from a model name such as `qwen2.5-coder-7b` or `SmolLM2-135M` (0: unknown)."""
    match = _SIZE.search(name.replace("_", "-"))
    if match is None:
        return 0.0
    value = float(match.group(1))
    return value if match.group(2).lower() == "b" else value / 1000


def quality_weight(model: str, params_b: float = 0.0) -> float:
    """The family's weight times a size factor that grows with the logarithm of the parameters."""
    name = model.lower()
    family = next((weight for pattern, weight in FAMILY_WEIGHTS if re.search(pattern, name)), UNKNOWN_FAMILY)
    size = params_b or params_from_name(name)
    return round(family * (1 + 0.25 * math.log2(1 + size)), 3)
