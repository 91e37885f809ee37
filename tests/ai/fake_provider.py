"""A local OpenAI-compatible chat-completions server for tests and benchmarks.

``FakeProvider`` is a real HTTP server (``http.server`` in a thread, HTTP/1.1, chunked SSE
responses) that answers ``POST /v1/chat/completions`` from a queue of scripted replies:

- ``TextReply(chunks)``: content deltas, ``finish_reason="stop"``;
- ``ToolCallReply(name, arguments)``: one tool call whose arguments arrive in pieces,
  ``finish_reason="tool_calls"``;
- ``ErrorReply(status, body)``: a plain JSON error response;
- ``MalformedReply(chunks_before)``: a stream that turns into invalid JSON after some text;
- ``DroppedReply(chunks_before)``: a stream whose connection is closed after some text.

Like the real API it sends a final usage chunk only when the request asked for it with
``stream_options.include_usage``, and refuses a wrong bearer key with 401 and a body that
echoes the key (as providers do), which lets tests prove the key never reaches the user.
Every request is recorded (``requests``) with the server's own time to first token
(``first_token_seconds``: request read -> first content chunk written).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class TextReply:
    chunks: list[str]
    prompt_tokens: int = 50
    completion_tokens: int = 20
    first_token_delay: float = 0.0
    chunk_delay: float = 0.0


@dataclass
class ToolCallReply:
    name: str
    arguments: dict[str, Any]
    call_id: str = "call_1"
    prompt_tokens: int = 40
    completion_tokens: int = 10
    content_before: str = ""  # text some models stream before calling a tool


@dataclass
class ErrorReply:
    status: int
    body: dict[str, Any] = field(
        default_factory=lambda: {"error": {"message": "internal error", "type": "server_error"}}
    )


@dataclass
class MalformedReply:
    chunks_before: list[str] = field(default_factory=list)


@dataclass
class DroppedReply:
    """Some text, then the connection is closed in the middle of the stream."""

    chunks_before: list[str] = field(default_factory=list)


Reply = TextReply | ToolCallReply | ErrorReply | MalformedReply | DroppedReply


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    first_token_seconds: float | None = None
    received_at: float = 0.0  # time.perf_counter() when the request was read


class FakeProvider:
    def __init__(self, api_key: str = "sk-test-fake-key-0123456789") -> None:
        self.api_key = api_key
        self.replies: deque[Reply] = deque()
        self.default_reply: Reply = TextReply(["Hello", " from", " the", " fake", " model."])
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self.replies.popleft() if self.replies else self.default_reply


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _handler_for(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Small SSE writes must leave at once, as a real server's do.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            received = time.perf_counter()
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = {}
            headers = {k.lower(): v for k, v in self.headers.items()}
            record = RecordedRequest(self.path, headers, body, received_at=received)
            with provider._lock:
                provider.requests.append(record)
            if not self.path.endswith("/chat/completions"):
                self._json(404, {"error": {"message": "not found"}})
                return
            if self.headers.get("Authorization") != f"Bearer {provider.api_key}":
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                message = f"Incorrect API key provided: {sent}"
                self._json(401, {"error": {"message": message, "type": "invalid_request_error"}})
                return
            reply = provider.next_reply()
            if isinstance(reply, ErrorReply):
                self._json(reply.status, reply.body)
                return
            model = str(body.get("model", "fake-model"))
            usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if isinstance(reply, DroppedReply):
                self._event(_chunk(model, {"role": "assistant", "content": ""}))
                for piece in reply.chunks_before:
                    self._event(_chunk(model, {"content": piece}))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(reply, MalformedReply):
                self._event(_chunk(model, {"role": "assistant", "content": ""}))
                for piece in reply.chunks_before:
                    self._event(_chunk(model, {"content": piece}))
                self._send_chunk(b"data: {this is not json\n\n")
                self._send_chunk(b"")
                return
            self._event(_chunk(model, {"role": "assistant", "content": ""}))
            if isinstance(reply, ToolCallReply):
                if reply.content_before:
                    self._event(_chunk(model, {"content": reply.content_before}))
                arguments = json.dumps(reply.arguments)
                half = len(arguments) // 2
                first = {
                    "index": 0,
                    "id": reply.call_id,
                    "type": "function",
                    "function": {"name": reply.name, "arguments": arguments[:half]},
                }
                self._event(_chunk(model, {"tool_calls": [first]}))
                rest = {"index": 0, "function": {"arguments": arguments[half:]}}
                self._event(_chunk(model, {"tool_calls": [rest]}))
                self._event(_chunk(model, {}, "tool_calls"))
                prompt, completion = reply.prompt_tokens, reply.completion_tokens
            else:
                if reply.first_token_delay:
                    time.sleep(reply.first_token_delay)
                for position, piece in enumerate(reply.chunks):
                    if position and reply.chunk_delay:
                        time.sleep(reply.chunk_delay)
                    self._event(_chunk(model, {"content": piece}))
                    if position == 0:
                        record.first_token_seconds = time.perf_counter() - received
                self._event(_chunk(model, {}, "stop"))
                prompt, completion = reply.prompt_tokens, reply.completion_tokens
            if usage_wanted:
                usage = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
                self._event({**_chunk(model, {}), "choices": [], "usage": usage})
            self._send_chunk(b"data: [DONE]\n\n")
            self._send_chunk(b"")

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _event(self, payload: dict[str, Any]) -> None:
            self._send_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

        def _send_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler
