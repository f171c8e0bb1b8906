"""Errors as OpenAI-compatible clients expect them: a status code and an `error` object.

`{"error": {"message", "type", "param", "code"}}`: the official clients raise their typed errors
from the status (400 BadRequestError, 401, 404, 429 RateLimitError...) and show `message`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "request_cancelled",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """Raised by a handler; the app turns it into the JSON error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid_body(error: ValidationError) -> ApiError:
    """A 400 naming the first field that is wrong, as OpenAI's `param` does (`messages[0].role`)."""
    problem = error.errors()[0]
    location = [part for part in problem["loc"] if part not in ("body",)]
    param = ""
    for part in location:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not str(part).startswith(("function-", "union[", "list[", "str", "int")):
            param += f".{part}" if param else str(part)
    message = problem["msg"]
    if problem["type"] == "missing":
        message = f"'{param}' is required"
    elif problem["type"] == "extra_forbidden":
        message = f"unknown field '{param}'"
    else:
        message = f"invalid '{param}': {message}"
    return ApiError(400, message, param=param or None, code="invalid_value")
