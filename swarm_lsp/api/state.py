"""What every handler of one `swarm-lsp api` process shares: the workspace and its upkeep."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm_lsp.upkeep import IndexUpkeep
from swarm_lsp.workspace import Workspace

GROUNDED_MODEL = "swarm"
PLAIN_MODEL = "swarm-plain"


@dataclass
class ApiState:
    workspace: Workspace
    upkeep: IndexUpkeep
    audit_file: Path
    started_at: float = field(default_factory=time.time)
    model_error: str | None = None
    """Why the model could not be loaded (every chat request answers 503 with it)."""
    doctor: tuple[float, dict[str, Any]] | None = None
    """The last doctor report and when it was made (it is kept for a few seconds)."""
    status: tuple[float, dict[str, Any]] | None = None
    """The last status sent to the event feeds and when it was made (shared by every open page)."""
