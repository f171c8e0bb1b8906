"""GET /v1/models and POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from swarm_lsp.api.errors import ApiError
from swarm_lsp.api.schema import EmbeddingRequest, parse, read_json
from swarm_lsp.api.state import GROUNDED_MODEL, PLAIN_MODEL, ApiState
from swarm_lsp.code.tokens import estimate_tokens
from swarm_lsp.workspace import EmbedderUnavailable


async def list_models(request: Request) -> Response:
    """`swarm` and `swarm-plain` answer; the models on this machine are listed after them, the one
    loaded marked `active` (asking for it by name is plain chat)."""
    state: ApiState = request.app.state.api
    report = await doctor_report(state)
    created = int(state.started_at)
    configured = report.get("configured", {})
    answering = configured.get("resolved") or state.workspace.model_info().get("name")
    data: list[dict[str, Any]] = [
        _model(
            GROUNDED_MODEL,
            created,
            grounded=True,
            answers_with=answering,
            description="a vote of the local voters, grounded in the workspace (retrieval, sources)",
        ),
        _model(
            PLAIN_MODEL,
            created,
            grounded=False,
            answers_with=answering,
            description="a vote of the local voters, plain chat (no retrieval)",
        ),
    ]
    for local in report.get("local_models", []):
        data.append(
            {
                "id": local["name"],
                "object": "model",
                "created": created,
                "owned_by": "local",
                "swarm_lsp": {
                    "active": local["name"] == answering,
                    "source": local["source"],
                    "format": local["format"],
                    "size_bytes": local["size_bytes"],
                },
            }
        )
    return JSONResponse({"object": "list", "data": data})


def _model(name: str, created: int, **details: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "swarm-lsp", "swarm_lsp": details}


async def doctor_report(state: ApiState, max_age_s: float = 30.0) -> dict[str, Any]:
    """The doctor report, made again when older than `max_age_s` (it scans for models)."""
    from swarm_lsp.doctor import diagnose

    loop = asyncio.get_running_loop()
    if state.doctor is None or loop.time() - state.doctor[0] > max_age_s:
        report = await asyncio.to_thread(lambda: diagnose(state.workspace.loaded).to_dict())
        state.doctor = (loop.time(), report)
    return state.doctor[1]


async def embeddings(request: Request) -> Response:
    state: ApiState = request.app.state.api
    body: EmbeddingRequest = parse(EmbeddingRequest, await read_json(request))
    texts = body.texts()
    try:
        vectors, model = await asyncio.to_thread(state.workspace.embed_texts, texts)
    except EmbedderUnavailable as error:
        raise ApiError(503, str(error), code="embedder_unavailable") from None
    if body.dimensions is not None and vectors and body.dimensions != len(vectors[0]):
        raise ApiError(
            400,
            f"the index's embedder ({model}) makes vectors of {len(vectors[0])} dimensions, "
            f"not {body.dimensions}",
            param="dimensions",
        )
    tokens = sum(estimate_tokens(text) for text in texts)
    return JSONResponse(
        {
            "object": "list",
            "model": model,
            "data": [
                {"object": "embedding", "index": index, "embedding": _encoded(vector, body.encoding_format)}
                for index, vector in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
