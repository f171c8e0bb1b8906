"""Workspace tools for agent hosts: file, index, swarm and shell tools behind one registry.

`registry.py` holds the model (Tool, Tier, Policy, approval, the call path); `sandbox.py` decides
which paths a tool may touch; `toolbox.py` wires them to a Workspace. Front doors (MCP today) only
translate their protocol into `Registry.call`.
"""

from swarm_lsp.tools.registry import (
    Annotations,
    ApprovalAnswer,
    ApprovalDeferred,
    ApprovalRequest,
    Approver,
    Caller,
    Output,
    Policy,
    Refused,
    Registry,
    SessionAllowance,
    Tier,
    Tool,
    ToolError,
)

__all__ = [
    "Annotations",
    "ApprovalAnswer",
    "ApprovalDeferred",
    "ApprovalRequest",
    "Approver",
    "Caller",
    "Output",
    "Policy",
    "Refused",
    "Registry",
    "SessionAllowance",
    "Tier",
    "Tool",
    "ToolError",
]
