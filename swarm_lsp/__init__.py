"""swarm-lsp: a local AI assistant server for code editors."""

__version__ = "0.1.0"
