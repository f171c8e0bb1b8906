"""What every client of an OpenAI-compatible server needs: its base URL, its model list, its errors.

Shared by the chat backend (backend.py) and the embedder (embedder.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import httpx

from swarm_lsp.models.base import ModelError

MODEL_MISSING = re.compile(r"model\b.*\b(does not exist|not found|unknown|no such)|unknown model", re.I)
"""How servers word "no such model" in an error body."""


class RemoteError(ModelError):
    """The server answered with an error that none of the more specific errors describes."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def normalise_base_url(url: str) -> str:
    """The OpenAI-compatible base URL: `host:port` and `http://host:port/` gain `/v1`.

    A URL that already has a path is kept as given, since some servers serve the API under
    another prefix (`.../openai/v1`, `.../v1beta/openai`).
    """
    url = url.strip()
    if "://" not in url:
        url = "http://" + url  # people type "127.0.0.1:8080"
    url = url.rstrip("/")
    for endpoint in ("/chat/completions", "/models"):  # a pasted endpoint URL instead of the base
        if url.endswith(endpoint):
            url = url[: -len(endpoint)]
    if httpx.URL(url).path in ("", "/"):
        url += "/v1"
    return url


def offers(names: Sequence[str], model: str) -> bool:
    """Whether a model list holds `model`: Ollama lists "llama3:latest" and answers to "llama3"."""
    return model in names or f"{model}:latest" in names


def describe_transport_error(error: httpx.TransportError) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def error_message_of(response: httpx.Response) -> tuple[str, str | None]:
    """The message and code of an error answer, JSON or not."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or "(no message)", None
    return error_message_in(body)


def error_message_in(body: Any) -> tuple[str, str | None]:
    """The message and code of an error body in any of the shapes servers use."""
    if not isinstance(body, dict):
        return str(body)[:300], None
    error = body.get("error", body)
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)[:300]
        code = error.get("code")
        return str(message), str(code) if code is not None else None
    return str(error or body.get("detail") or body)[:300], None
