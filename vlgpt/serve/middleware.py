"""Two checks that run before any route reads a byte of the body: the API key and the body size.

Both are plain ASGI middleware, so they answer before FastAPI parses anything, in OpenAI's error
shape (FastAPI's own `max_body_size` answers an oversize Content-Length in plain text, so it is
not used).
"""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response, too_large

OPEN_PATHS = frozenset({"/", "/health"})  # the UI page is static and holds no data; it asks for the key


class BearerAuth:
    """`Authorization: Bearer KEY` on every HTTP route but OPEN_PATHS, compared in constant time."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413)


class BodyLimit:
    """413 for a body over `max_bytes`: at once from its Content-Length, before reading anything, and
    otherwise (chunked uploads, a Content-Length that lies) as soon as the bytes received pass it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = (
                too_large(self.max_bytes)
                if declared.isdigit()
                else error_response(400, "the Content-Length header is not a number")
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()  # FastAPI lets HTTPExceptions from body reading reach our handler
            return message

        await self.app(scope, counted_receive, send)
