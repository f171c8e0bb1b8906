"""The MCP front door (`swarm-lsp mcp`): the tool registry over stdio or streamable HTTP."""

from swarm_lsp.mcp.server import (
    DEFAULT_TOOL_PORT,
    build_server,
    http_app,
    serve_http,
    serve_stdio,
)

__all__ = ["DEFAULT_TOOL_PORT", "build_server", "http_app", "serve_http", "serve_stdio"]
