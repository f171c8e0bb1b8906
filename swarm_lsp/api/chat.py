"""POST /v1/chat/completions: an OpenAI chat request answered by the swarm's vote.

The model name chooses the answer: `swarm` is grounded in the workspace (retrieval, citations,
sources), `swarm-plain` (or the name of the loaded model) is plain chat with the model. Both vote
over N voters. `n` returns the candidates as choices, the winner first; the vote travels in the
`swarm_lsp` field. Streaming sends progress as SSE comment lines while the voters write (plain
clients skip comments), then the winning answer in OpenAI's chunk format once the vote is in.

A client that disconnects cancels its request: the voters stop within one token step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from swarm_lsp.api.errors import ApiError
from swarm_lsp.api.listings import doctor_report
from swarm_lsp.api.schema import ChatMessage, ChatRequest, parse, read_json
from swarm_lsp.api.state import GROUNDED_MODEL, PLAIN_MODEL, ApiState
from swarm_lsp.basics import CancellationToken, SwarmLspError
from swarm_lsp.swarm.engine import SwarmProgress
from swarm_lsp.swarm.queue import QueueFull
from swarm_lsp.swarm.runner import GenerationOptions, SwarmResult
from swarm_lsp.swarm.tasks import Message, Task

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
STREAM_PIECE_CHARS = 48
"""The answer is sent in pieces of about this many characters, split at spaces."""


async def chat_completions(request: Request) -> Response:
    state: ApiState = request.app.state.api
    chat: ChatRequest = parse(ChatRequest, await read_json(request))
    grounded = await _grounded(state, chat.model)
    task = task_for(chat.messages, grounded)
    if state.model_error is not None:
        raise ApiError(503, f"the model could not be loaded: {state.model_error}", code="model_unavailable")
    workspace = state.workspace
    if grounded:
        try:
            await state.upkeep.ensure()  # the first sync: a grounded answer needs the index
        except Exception as error:  # answer from what is indexed; /api/status shows the failure
            log.warning("the index could not be brought up to date: %s", error)
    try:
        workspace.queue.check()
        default_voters = await asyncio.to_thread(lambda: workspace.runner.voters)
    except Exception as error:
        raise error_for(error) from None
    options = GenerationOptions(
        temperature=chat.temperature, max_tokens=chat.token_limit, stop=chat.stops, seed=chat.seed
    )
    cancel = CancellationToken()
    progress: list[SwarmProgress] = []

    def on_progress(event: SwarmProgress) -> None:
        progress[:] = [event]

    run = asyncio.ensure_future(
        workspace.run(
            task,
            voters=max(chat.n, default_voters),
            cancel=cancel,
            on_progress=on_progress,
            options=options,
            door="api",
            model_label=chat.model,
        )
    )
    if chat.stream:
        return StreamingResponse(
            _stream(chat, run, cancel, progress, grounded),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    result = await _until_done_or_gone(request, run, cancel)
    return JSONResponse(completion(chat, result, grounded))


async def _grounded(state: ApiState, model: str) -> bool:
    if model == GROUNDED_MODEL:
        return True
    if model == PLAIN_MODEL or model == state.workspace.model_info().get("name"):
        return False
    report = await doctor_report(state)
    if model == report.get("configured", {}).get("resolved"):
        return False
    raise ApiError(
        404,
        f"this server answers with the models '{GROUNDED_MODEL}' (grounded in the workspace) and "
        f"'{PLAIN_MODEL}' (plain chat), not '{model}'; GET /v1/models lists them. To run another model, "
        "set model.name in the workspace's .swarm-lsp.toml and restart `swarm-lsp api`",
        param="model",
        code="model_not_found",
    )


def task_for(messages: list[ChatMessage], grounded: bool) -> Task:
    """OpenAI messages as a chat task: system and developer messages become its instructions, the
    last user message its prompt, the turns before it its history."""
    instructions: list[str] = []
    turns: list[Message] = []
    for index, message in enumerate(messages):
        text = message.text(index)
        if message.role in ("system", "developer"):
            instructions.append(text)
        elif message.role == "tool":
            raise ApiError(
                400,
                f"messages[{index}] is a tool result; this server does not call tools, send user and "
                "assistant messages",
                param=f"messages[{index}].role",
                code="unsupported_role",
            )
        else:
            turns.append(Message(message.role, text))
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise ApiError(400, "the last message must be a user message with text", param="messages")
    return Task(
        kind="chat",
        prompt=turns[-1].content,
        history=turns[:-1],
        instructions="\n\n".join(text for text in instructions if text.strip()),
        grounded=grounded,
    )


async def _until_done_or_gone(
    request: Request, run: asyncio.Future[SwarmResult], cancel: CancellationToken
) -> SwarmResult:
    """The run's result, or, if the client disconnects first, the run cancelled (and a 499)."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not run.done():
            cancel.cancel()
            run.cancel()
        gone.cancel()
    if not run.cancelled() and run.exception() is None:
        return run.result()
    if run.cancelled():
        raise ApiError(499, "the client went away; the request was cancelled", code="cancelled")
    raise error_for(run.exception())


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def error_for(error: BaseException | None) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, QueueFull):
        return ApiError(429, str(error), code="queue_full", headers={"Retry-After": str(error.retry_after_s)})
    if isinstance(error, ValueError):
        return ApiError(400, str(error), code="invalid_request")
    name = type(error).__name__
    if name == "ContextOverflow":
        return ApiError(400, str(error), param="messages", code="context_length_exceeded")
    if isinstance(error, SwarmLspError):
        return ApiError(503, str(error), code=_snake(name))
    return ApiError(500, f"the server failed: {name}: {error}", code="server_error")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


# ------------------------------------------------------------------------------------ responses


def _choices(result: SwarmResult, n: int) -> list[tuple[str, str]]:
    """(text, finish_reason) of the winner, then the other candidates by score: `n` at most."""
    ranked = sorted(result.candidates, key=lambda c: (c.index != result.winner, -c.score, c.index))
    choices = []
    for candidate in ranked[:n]:
        text = result.answer if candidate.index == result.winner else candidate.text
        choices.append(
            (text, candidate.finish_reason if candidate.finish_reason in ("stop", "length") else "stop")
        )
    return choices or [(result.answer, "stop")]


def swarm_fields(result: SwarmResult, grounded: bool) -> dict[str, Any]:
    """The `swarm_lsp` extension field: how the vote went."""
    return {
        "agreement": round(result.agreement, 4),
        "low_agreement": result.low_agreement,
        "strategy": result.strategy,
        "winner": result.winner,
        "voters": result.voters,
        "finished_voters": len(result.candidates),
        "grounded": grounded,
        "sources": result.sources,
        "degraded": result.degraded,
        "notes": result.notes,
        "model": result.model,
        "candidates": [
            {"index": c.index, "score": c.score, "votes": c.votes, "valid": c.valid, "backend": c.backend}
            for c in result.candidates
        ],
        "placed": result.placed,
        "failed_nodes": result.failed_nodes,
        "retried": result.retried,
        "timings": {key: round(value, 3) for key, value in result.timings.items()},
    }


def _usage(result: SwarmResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def completion(chat: ChatRequest, result: SwarmResult, grounded: bool) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            for index, (text, finish) in enumerate(_choices(result, chat.n))
        ],
        "usage": _usage(result),
        "swarm_lsp": swarm_fields(result, grounded),
    }


# ------------------------------------------------------------------------------------ streaming


async def _stream(
    chat: ChatRequest,
    run: asyncio.Future[SwarmResult],
    cancel: CancellationToken,
    progress: list[SwarmProgress],
    grounded: bool,
) -> AsyncIterator[str]:
    """Progress comments while the swarm works, then the answer as chunks, then [DONE]. Starlette
    cancels this generator when the client disconnects: the run is cancelled with it."""
    try:
        yield ": swarm-lsp queued\n\n"
        while not run.done():
            done, _ = await asyncio.wait({run}, timeout=PROGRESS_EVERY_S)
            if not done and progress:
                event = progress[0]
                note = {"phase": event.phase, "voters": event.voters, "tokens": event.tokens}
                yield f": swarm-lsp progress {json.dumps(note)}\n\n"
        try:
            result = run.result()
        except (Exception, asyncio.CancelledError) as error:
            problem = error_for(error if not isinstance(error, asyncio.CancelledError) else None)
            yield f"data: {json.dumps(problem.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        for chunk in answer_chunks(chat, result, grounded):
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not run.done():
            cancel.cancel()
            run.cancel()
            with contextlib.suppress(BaseException):
                await run


def answer_chunks(chat: ChatRequest, result: SwarmResult, grounded: bool) -> list[dict[str, Any]]:
    """The voted answer (and the other choices when n > 1) in OpenAI's chat.completion.chunk form."""
    identity = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
        "system_fingerprint": None,
    }

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**identity, "choices": [choice], **extra}

    chunks = []
    for index, (text, finish) in enumerate(_choices(result, chat.n)):
        chunks.append(chunk(index, {"role": "assistant", "content": ""}))
        chunks.extend(chunk(index, {"content": piece}) for piece in _pieces(text))
        chunks.append(chunk(index, {}, finish, swarm_lsp=swarm_fields(result, grounded)))
    if chat.stream_options is not None and chat.stream_options.include_usage:
        chunks.append({**identity, "choices": [], "usage": _usage(result)})
    return chunks


def _pieces(text: str) -> list[str]:
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + STREAM_PIECE_CHARS)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space + 1 if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces
