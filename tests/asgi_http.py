"""Raw ASGI HTTP calls against ``pequeroku.asgi.application``, counting the body bytes read.

Django's test clients call Django's handler directly; the project's own ASGI wrappers (the body
limit) only run when the application is spoken to as a server would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CHUNK = 64 * 1024


@dataclass
class AsgiResult:
    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    bytes_read: int = 0
    set_cookies: list[bytes] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def body_chunks(total: int, chunk: int = CHUNK) -> Iterable[bytes]:
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        sent += size
        yield b"x" * size


async def asgi_post(
    app: Any,
    path: str,
    chunks: Iterable[bytes],
    *,
    content_length: int | None,
    content_type: bytes = b"application/json",
    timeout: float = 30,
) -> AsgiResult:
    """POST ``chunks`` to ``path``; ``content_length=None`` sends no length (chunked)."""
    headers = [(b"host", b"localhost"), (b"content-type", content_type)]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
    result = AsgiResult()
    pending = iter(chunks)
    next_chunk = next(pending, None)
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal next_chunk
        if next_chunk is None:
            await finished.wait()  # the client stays connected until the answer is complete
            return {"type": "http.disconnect"}
        body, next_chunk = next_chunk, next(pending, None)
        result.bytes_read += len(body)
        return {"type": "http.request", "body": body, "more_body": next_chunk is not None}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")
            if not message.get("more_body"):
                finished.set()

    await asyncio.wait_for(app(scope, receive, send), timeout)
    finished.set()
    return result


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    query_string: bytes = b"",
    stop_after_body_bytes: int | None = None,
    timeout: float = 30,
) -> AsgiResult:
    """One request as a server would make it; ``stop_after_body_bytes``: the client hangs up
    once that much of the answer's body arrived (the app then sees ``http.disconnect``)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            *([(b"content-length", str(len(body)).encode())] if body else []),
            *headers,
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
    result = AsgiResult()
    sent_body = False
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            result.bytes_read = len(body)
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = dict(message.get("headers", []))
            result.set_cookies = [v for k, v in message.get("headers", []) if k == b"Set-Cookie"]
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")
            if not message.get("more_body"):
                gone.set()
            elif stop_after_body_bytes is not None and len(result.body) >= stop_after_body_bytes:
                gone.set()
                await asyncio.sleep(0)  # the app notices the disconnect before the next chunk

    await asyncio.wait_for(app(scope, receive, send), timeout)
    gone.set()
    return result
