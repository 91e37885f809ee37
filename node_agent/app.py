"""The agent's HTTP/WebSocket API (FastAPI). No Django: this runs on compute hosts.

Entry point: ``create_app(config)``. Every request and WebSocket needs
``Authorization: Bearer <token>``; errors are ``{"detail": ..., "code": ...}`` with the status
and code of ``node_agent.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncssh
from fastapi import Body, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from . import archive, guest
from .config import AgentConfig
from .errors import AgentError, BadRequestError
from .paths import workspace_path
from .schemas import (
    ErrorOut,
    ExecIn,
    ExecOut,
    FileEntryOut,
    MoveIn,
    NodeHealthOut,
    PathIn,
    VMSpecIn,
    VMStatsOut,
    VMStatusOut,
)
from .vms import VMManager

log = logging.getLogger("node_agent")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 404, 409, 500, 503)
}


class BearerAuth:
    """Refuses any HTTP request or WebSocket handshake without the node's token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self._expected = app, f"Bearer {token}".encode()

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "missing or wrong token", "code": "unauthorized"}).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            start = {"type": "websocket.http.response.start", "status": 401, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def _error_response(exc: AgentError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=exc.status)


def create_app(config: AgentConfig) -> FastAPI:
    manager = VMManager(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await manager.startup()
        yield
        await manager.shutdown()

    app = FastAPI(title="Pequeroku node agent", version="1", lifespan=lifespan, responses=ERRORS)
    app.state.manager = manager

    @app.exception_handler(AgentError)
    async def agent_error(_: Request, exc: AgentError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(BadRequestError(_summarise(exc)))

    _add_vm_routes(app, manager)
    _add_file_routes(app, manager)
    _add_terminal_route(app, manager)
    app.add_middleware(BearerAuth, token=config.token)
    return app


def _summarise(exc: RequestValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}"
        for error in exc.errors()
    ]
    return "; ".join(parts)[:500] or "invalid request"


def _add_vm_routes(app: FastAPI, manager: VMManager) -> None:
    @app.get("/health", response_model=NodeHealthOut)
    async def health() -> dict[str, object]:
        return await manager.health()

    @app.get("/vms", response_model=list[VMStatusOut])
    async def vm_list() -> list[dict[str, object]]:
        return await manager.list()

    @app.post("/vms", response_model=VMStatusOut)
    async def vm_create(spec: VMSpecIn) -> dict[str, object]:
        return await manager.create(spec.model_dump())

    @app.get("/vms/{vm_id}", response_model=VMStatusOut)
    async def vm_status(vm_id: str) -> dict[str, object]:
        return await manager.status(vm_id)

    @app.delete("/vms/{vm_id}", status_code=204)
    async def vm_delete(vm_id: str) -> Response:
        await manager.delete(vm_id)
        return Response(status_code=204)

    @app.post("/vms/{vm_id}/start", response_model=VMStatusOut)
    async def vm_start(vm_id: str) -> dict[str, object]:
        return await manager.start(vm_id)

    @app.post("/vms/{vm_id}/stop", response_model=VMStatusOut)
    async def vm_stop(vm_id: str, timeout: float = Query(30.0, ge=0, le=600)) -> dict[str, object]:
        return await manager.stop(vm_id, timeout)

    @app.post("/vms/{vm_id}/suspend", response_model=VMStatusOut)
    async def vm_suspend(vm_id: str) -> dict[str, object]:
        return await manager.suspend(vm_id)

    @app.get("/vms/{vm_id}/stats", response_model=VMStatsOut)
    async def vm_stats(vm_id: str) -> dict[str, object]:
        return await manager.stats(vm_id)

    @app.post("/vms/{vm_id}/exec", response_model=ExecOut)
    async def vm_exec(vm_id: str, body: ExecIn) -> dict[str, object]:
        return await manager.exec(vm_id, body.cmd, body.timeout)


def _add_file_routes(app: FastAPI, manager: VMManager) -> None:
    @app.get("/vms/{vm_id}/files", response_model=list[FileEntryOut])
    async def files_list(
        vm_id: str, path: str = "/app", limit: int | None = Query(None, ge=1, le=100_000)
    ) -> list[dict[str, object]]:
        target = workspace_path(path)
        return await guest.list_dir(await manager.guest(vm_id), target, limit)

    @app.delete("/vms/{vm_id}/files", status_code=204)
    async def files_delete(vm_id: str, path: str) -> Response:
        target = workspace_path(path)
        await guest.delete_path(await manager.guest(vm_id), target)
        return Response(status_code=204)

    @app.get("/vms/{vm_id}/files/content", response_class=Response)
    async def files_read(
        vm_id: str, path: str, max_bytes: int | None = Query(None, ge=0, le=guest.MAX_FILE_BYTES)
    ) -> Response:
        """With ``max_bytes``: the whole file or 413 ``file_too_large``; without: streamed."""
        target = workspace_path(path)
        conn = await manager.guest(vm_id)
        if max_bytes is None:
            await guest.check_file(conn, target)
            return StreamingResponse(
                guest.read_stream(conn, target), media_type="application/octet-stream"
            )
        data = await guest.read_file(conn, target, max_bytes)
        return Response(data, media_type="application/octet-stream")

    @app.put("/vms/{vm_id}/files/content", status_code=204)
    async def files_write(
        vm_id: str,
        path: str,
        content: bytes = Body(b"", media_type="application/octet-stream"),
        mode: int | None = Query(None, ge=0, le=0o7777),
    ) -> Response:
        target = workspace_path(path)
        await guest.write_file(await manager.guest(vm_id), target, content, mode)
        return Response(status_code=204)

    @app.post("/vms/{vm_id}/files/mkdir", status_code=204)
    async def files_mkdir(vm_id: str, body: PathIn) -> Response:
        target = workspace_path(body.path)
        await guest.make_dir(await manager.guest(vm_id), target)
        return Response(status_code=204)

    @app.post("/vms/{vm_id}/files/move", status_code=204)
    async def files_move(vm_id: str, body: MoveIn) -> Response:
        src, dst = workspace_path(body.src), workspace_path(body.dst)
        await guest.move_path(await manager.guest(vm_id), src, dst)
        return Response(status_code=204)

    @app.get("/vms/{vm_id}/archive", response_class=StreamingResponse)
    async def files_archive(
        vm_id: str, root: str = "/app", fmt: Literal["zip", "tar.gz"] = "tar.gz"
    ) -> StreamingResponse:
        target = workspace_path(root)
        conn = await manager.guest(vm_id)
        chunks = await archive.archive_stream(conn, target, fmt, manager.config.max_archive_bytes)
        media_type = "application/zip" if fmt == "zip" else "application/gzip"
        return StreamingResponse(chunks, media_type=media_type)


def _add_terminal_route(app: FastAPI, manager: VMManager) -> None:
    @app.websocket("/vms/{vm_id}/terminal")
    async def terminal(websocket: WebSocket, vm_id: str, cols: int = 80, rows: int = 24) -> None:
        try:
            conn = await manager.guest(vm_id)
            proc = await conn.create_process(
                "cd /app && exec bash -l",
                term_type="xterm-256color",
                term_size=(_clamp(cols), _clamp(rows)),
                encoding=None,
            )
        except AgentError as exc:
            await websocket.send_denial_response(_error_response(exc))
            return
        except (OSError, asyncssh.Error):
            await websocket.send_denial_response(
                _error_response(guest.SSHNotReadyError("could not open a terminal"))
            )
            return
        await websocket.accept()
        await _bridge(websocket, proc)


def _clamp(size: int) -> int:
    return max(1, min(int(size), 1000))


async def _bridge(websocket: WebSocket, proc: asyncssh.SSHClientProcess[bytes]) -> None:
    async def guest_to_client() -> None:
        while chunk := await proc.stdout.read(65536):
            await websocket.send_bytes(chunk)

    async def client_to_guest() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                proc.stdin.write(message["bytes"])
            elif message.get("text"):
                _apply_control(proc, message["text"])

    tasks = [asyncio.create_task(guest_to_client()), asyncio.create_task(client_to_guest())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        proc.close()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()


def _apply_control(proc: asyncssh.SSHClientProcess[bytes], text: str) -> None:
    try:
        message = json.loads(text)
        if message.get("type") == "resize":
            proc.change_terminal_size(_clamp(message["cols"]), _clamp(message["rows"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        log.debug("ignoring a malformed terminal control frame")
