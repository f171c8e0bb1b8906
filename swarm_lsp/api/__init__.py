"""The HTTP front door (`swarm-lsp api`, port 17615): an OpenAI-compatible API answered by the swarm,
and a live dashboard. See docs/api.md."""

from swarm_lsp.api.server import DEFAULT_API_PORT, TokenRequired, check_exposure, serve

__all__ = ["DEFAULT_API_PORT", "TokenRequired", "check_exposure", "serve"]
