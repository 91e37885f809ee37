"""Request bodies are limited before Django reads them (ASGI middleware around the HTTP app).

Entry points: ``BodySizeLimit(app)``, ``body_limit_for(path)``.

Under ASGI Django reads the whole body into a temporary file before any middleware or view
runs, on every route, logged in or not; a limit checked in a view comes too late. This
middleware answers 413 (``{"detail", "code"}``) as soon as the declared ``Content-Length`` is
over the route's limit, without reading a byte, and stops a body sent without a length (chunked)
as soon as it passes the limit. Limits: ``MAX_UPLOAD_BYTES`` plus multipart framing for the
upload route, ``MAX_REQUEST_BYTES`` everywhere else (admin and API forms, JSON bodies).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Multipart framing around an uploaded file (boundaries, part headers, dest_path).
MULTIPART_SLACK_BYTES = 64 * 1024
UPLOAD_ROUTE = re.compile(r"^/api/containers/[^/]+/upload_file/?$")


def body_limit_for(path: str) -> tuple[int, str]:
    """(largest body in bytes, error code) for a request to ``path``."""
    if UPLOAD_ROUTE.match(path):
        return settings.MAX_UPLOAD_BYTES + MULTIPART_SLACK_BYTES, "file_too_large"
    return settings.MAX_REQUEST_BYTES, "request_too_large"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int, code: str) -> None:
    body = json.dumps(
        {"detail": f"The request body is larger than {limit} bytes.", "code": code}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, code = body_limit_for(scope.get("path", ""))
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit, code)
            return

        received = 0
        overflowed = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, overflowed
            if overflowed:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django stops reading at a disconnect and answers nothing; we answer.
                    overflowed = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if overflowed and not response_started:
            await _refuse(send, limit, code)
