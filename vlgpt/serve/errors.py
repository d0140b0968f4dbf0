"""Every error leaves the server in OpenAI's shape, with no stack trace:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

The official clients read `message`, `type` and `code` from it. Unexpected exceptions are logged
on the server with their traceback (Starlette re-raises them to uvicorn, which logs it) and answered
with a generic 500.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..data.images import ImageError, ImageTooLarge
from ..inference.generate import GenerationError

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error with an HTTP status, raised anywhere in a request and answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def too_large(max_body_bytes: int) -> JSONResponse:
    return error_response(
        413,
        f"the request body is larger than the server's limit of "
        f"{max_body_bytes / 2**20:.1f} MB (--max-body-mb)",
        code="body_too_large",
    )


def install_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    """Handlers for our errors, HTTP errors (404, 405, 413 ...), validation errors and anything else."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(
            error.status, error.message, param=error.param, code=error.code, headers=error.headers
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 413:
            return too_large(max_body_bytes)
        message = {
            404: f"no route {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        return error_response(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(error.errors())
        return error_response(400, message, param=param)

    @app.exception_handler(ImageError)
    async def image_error(request: Request, error: ImageError) -> JSONResponse:
        code = "image_too_large" if isinstance(error, ImageTooLarge) else "invalid_image"
        return error_response(400, str(error), code=code)

    @app.exception_handler(GenerationError)
    async def generation_error(request: Request, error: GenerationError) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "internal server error; the server log has the details")


def _describe_validation(errors: list[dict]) -> tuple[str, str | None]:
    """Pydantic's most specific error -> (message, param); the offending input is never echoed back.

    For a union (content: str | list of parts) pydantic reports one error per branch; the one that
    went deepest names the real problem, so it is the one reported.
    """
    if not errors:
        return "invalid request", None
    error = max(errors, key=lambda e: len(e.get("loc", ())))
    if error.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({(error.get('ctx') or {}).get('error', '')})", None
    param = _param(error.get("loc", ()))
    if param is None:
        return "the request body must be a JSON object with the fields of this route", None
    if error.get("type") == "missing":
        return f"'{param}' is required", param
    return f"{param}: {error.get('msg', 'invalid value')}", param


def _param(loc: tuple) -> str | None:
    """('body', 'messages', 0, 'content', 'list[...]', 0, 'text') -> 'messages[0].content[0].text'."""
    param = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not any(c in part for c in "[(-") and part not in (
            "str",
            "int",
            "float",
            "bool",
            "list",
            "dict",
        ):
            param += f".{part}" if param else part
    return param or None
