"""The request bodies the OpenAI-compatible endpoints accept, checked field by field.

Unknown fields are ignored, as OpenAI's API does; a known field with a wrong value is a 400 that
names it (`errors.invalid_body`). Fields of the OpenAI API that a vote cannot honour (logprobs,
tools) are ignored too; docs/api.md lists what is honoured.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator
from starlette.requests import Request

from swarm_lsp.api.errors import ApiError, invalid_body

MAX_CHOICES = 16
MAX_STOPS = 4
MAX_EMBEDDING_INPUTS = 2048


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self, index: int) -> str:
        """The message's text; parts other than text are refused (this server reads text only)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return _checked_text(self.content, f"messages[{index}].content")
        pieces = []
        for number, part in enumerate(self.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(
                    400,
                    f"messages[{index}].content[{number}] is a {part.get('type')!r} part; this server "
                    "reads text parts only",
                    param=f"messages[{index}].content[{number}]",
                    code="unsupported_content",
                )
            pieces.append(_checked_text(part["text"], f"messages[{index}].content[{number}].text"))
        return "\n".join(pieces)


def _checked_text(text: str, param: str) -> str:
    """`text`, unless it holds a lone surrogate (JSON's "\\ud800" decodes to one): no model reads that."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ApiError(
            400,
            f"{param} holds a lone UTF-16 surrogate at character {error.start}, which is not text; "
            "send valid Unicode",
            param=param,
            code="invalid_value",
        ) from None
    return text


class StreamOptions(_Body):
    include_usage: StrictBool = False


class ChatRequest(_Body):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(1, ge=1, le=MAX_CHOICES)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: StrictInt | None = Field(None, ge=1, le=32768)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=32768)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(stop for stop in ([self.stop] if isinstance(self.stop, str) else self.stop) if stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)

    def texts(self) -> list[str]:
        value = self.input
        if isinstance(value, str):
            value = [value]
        if not value:
            raise ApiError(400, "'input' is empty; send a string or a list of strings", param="input")
        if not all(isinstance(item, str) for item in value):
            raise ApiError(
                400,
                "'input' holds token ids; this server embeds text: send a string or a list of strings",
                param="input",
                code="unsupported_input",
            )
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise ApiError(400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request", param="input")
        for index, item in enumerate(value):
            if not item.strip():  # type: ignore[union-attr]
                raise ApiError(400, f"input[{index}] is empty", param=f"input[{index}]")
        return list(value)  # type: ignore[arg-type]


async def read_json(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(
            400, "the request body nests arrays or objects too deeply to read", code="invalid_json"
        ) from None


def parse(model: type[_Body], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise invalid_body(error) from None
