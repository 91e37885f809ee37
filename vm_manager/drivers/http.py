"""``HttpNodeDriver``: the ``NodeDriver`` contract over the node agent's HTTP/WebSocket API.

Entry points: ``HttpNodeDriver(base_url, token)`` and ``HttpNodeDriver.for_node(node)``.
Agent errors carry ``{"detail", "code"}``; ``_raise_for`` maps status and code to the
``NodeError`` subclasses. The token is sent as a bearer header only and never appears in an
exception message or a log line.

TLS: a node with ``use_tls`` has an ``https://`` URL; the agent's certificate is always verified
(HTTP and the terminal WebSocket alike), against the system's trusted CAs or, when the
``NODE_TLS_CA_FILE`` setting names a PEM file, against that private CA only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .base import (
    ArchiveFormat,
    ExecResult,
    FileEntry,
    GuestFileNotFound,
    GuestFileTooLarge,
    NodeAuthError,
    NodeBadRequest,
    NodeError,
    NodeHealth,
    NodeUnavailable,
    PathNotAllowed,
    VMNotFound,
    VMNotRunning,
    VMSpec,
    VMStats,
    VMStatus,
)

if TYPE_CHECKING:
    from vm_manager.models import Node

DEFAULT_TIMEOUT = 30.0
SLACK = 15.0  # extra seconds over an operation's own timeout (exec, stop) for the round trip

_BY_CODE: dict[str, type[NodeError]] = {
    "vm_not_found": VMNotFound,
    "file_not_found": GuestFileNotFound,
    "file_too_large": GuestFileTooLarge,
    "vm_not_running": VMNotRunning,
    "ssh_not_ready": VMNotRunning,
    "identity_mismatch": VMNotRunning,
    "path_not_allowed": PathNotAllowed,
    "unauthorized": NodeAuthError,
}
_BY_STATUS: dict[int, type[NodeError]] = {
    401: NodeAuthError,
    403: NodeAuthError,
    404: VMNotFound,
    409: VMNotRunning,
}


def _error_for(status: int, body: bytes) -> NodeError:
    detail, code = f"node agent answered {status}", ""
    try:
        payload = json.loads(body)
        detail = str(payload.get("detail") or detail)[:500]
        code = str(payload.get("code") or "")
    except (ValueError, AttributeError):
        pass
    if status >= 500:
        return NodeUnavailable(f"node agent error {status}: {detail}")
    exc_class = _BY_CODE.get(code) or _BY_STATUS.get(status, NodeBadRequest)
    return exc_class(detail)


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    raise _error_for(response.status_code, response.content)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name checks on; trust ``ca_file`` alone when given.

    Built once per CA file (and its modification time): loading a trust store takes ~30 ms
    of CPU, which every request paid when each built its own.
    """
    stamp = 0
    if ca_file:
        with contextlib.suppress(OSError):
            stamp = os.stat(ca_file).st_mtime_ns
    return _tls_context(ca_file, stamp)


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None, _stamp: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _configured_ca_file() -> str | None:
    from django.conf import settings

    return getattr(settings, "NODE_TLS_CA_FILE", "") or None


_HEALTH_INTS = (
    "capacity_vcpus",
    "capacity_mem_mb",
    "used_vcpus",
    "used_mem_mb",
    "running_vms",
    "capacity_disk_mb",
    "free_disk_mb",
)


def parse_health(raw: Any) -> NodeHealth:
    """The agent's /health as ``NodeHealth``, never trusting its shape.

    An agent too old to report disk or isolation counts as 0 MB free and not isolated, so it
    gets no new containers rather than being assumed safe.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("arch"), str):
        raise NodeError("node agent sent a malformed health report")

    def number(key: str) -> int:
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise NodeError(f"node agent sent a malformed health report ({key})")
        return value

    counts = {key: number(key) for key in _HEALTH_INTS}
    return NodeHealth(
        arch=raw["arch"],
        kvm_available=raw.get("kvm_available") is True,
        accel=str(raw.get("accel", "")),
        guest_isolation=raw.get("guest_isolation") is True,
        guest_egress=str(raw.get("guest_egress", "")),
        isolation_detail=str(raw.get("isolation_detail", ""))[:1000],
        golden_snapshots=_golden_snapshots(raw.get("golden_snapshots")),
        **counts,  # type: ignore[typeddict-item]
    )


def _golden_snapshots(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {str(shape)[:200]: str(state)[:1000] for shape, state in list(raw.items())[:100]}


class HttpNodeDriver:
    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._tls = tls_context(ca_file) if self.base_url.startswith("https://") else None

    def __repr__(self) -> str:
        return f"HttpNodeDriver({self.base_url!r})"

    @classmethod
    def for_node(cls, node: Node) -> HttpNodeDriver:
        return cls(node.agent_url, node.auth_token, ca_file=_configured_ca_file())

    # -- transport --------------------------------------------------------------------------

    def _client(self, timeout: float | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=timeout or self.timeout,
            verify=self._tls or tls_context(None),
        )

    async def _request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            async with self._client(timeout) as client:
                response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            # The exception text may quote the request; keep only its kind.
            raise NodeUnavailable(
                f"node agent {self.base_url} unreachable: {type(exc).__name__}"
            ) from None
        _raise_for(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    # -- NodeDriver -------------------------------------------------------------------------

    async def health(self) -> NodeHealth:
        return parse_health(await self._json("GET", "/health"))

    async def vm_create(self, spec: VMSpec) -> VMStatus:
        return await self._json("POST", "/vms", json=dict(spec), timeout=self.timeout + SLACK)

    async def vm_start(self, vm_id: str) -> VMStatus:
        return await self._json("POST", f"/vms/{vm_id}/start", timeout=self.timeout + 60)

    async def vm_stop(self, vm_id: str, timeout: float = 30.0) -> VMStatus:
        return await self._json(
            "POST", f"/vms/{vm_id}/stop", params={"timeout": timeout}, timeout=timeout + SLACK
        )

    async def vm_suspend(self, vm_id: str) -> VMStatus:
        return await self._json("POST", f"/vms/{vm_id}/suspend", timeout=self.timeout + 120)

    async def vm_delete(self, vm_id: str) -> None:
        await self._request("DELETE", f"/vms/{vm_id}", timeout=self.timeout + SLACK)

    async def vm_status(self, vm_id: str) -> VMStatus:
        return await self._json("GET", f"/vms/{vm_id}")

    async def vm_list(self) -> list[VMStatus]:
        return await self._json("GET", "/vms")

    async def vm_stats(self, vm_id: str) -> VMStats:
        return await self._json("GET", f"/vms/{vm_id}/stats")

    async def exec(self, vm_id: str, cmd: str, timeout: float = 30.0) -> ExecResult:
        return await self._json(
            "POST",
            f"/vms/{vm_id}/exec",
            json={"cmd": cmd, "timeout": timeout},
            timeout=timeout + SLACK,
        )

    async def list_dir(self, vm_id: str, path: str, limit: int | None = None) -> list[FileEntry]:
        params: dict[str, Any] = {"path": path}
        if limit is not None:
            params["limit"] = limit
        return await self._json("GET", f"/vms/{vm_id}/files", params=params)

    async def read_file(self, vm_id: str, path: str, max_bytes: int | None = None) -> bytes:
        params: dict[str, Any] = {"path": path}
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        response = await self._request("GET", f"/vms/{vm_id}/files/content", params=params)
        return response.content

    def read_file_stream(self, vm_id: str, path: str) -> AsyncIterator[bytes]:
        return self._stream(f"/vms/{vm_id}/files/content", {"path": path})

    async def write_file(
        self, vm_id: str, path: str, content: bytes, mode: int | None = None
    ) -> None:
        params: dict[str, Any] = {"path": path}
        if mode is not None:
            params["mode"] = mode
        await self._request(
            "PUT",
            f"/vms/{vm_id}/files/content",
            params=params,
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )

    async def make_dir(self, vm_id: str, path: str) -> None:
        await self._request("POST", f"/vms/{vm_id}/files/mkdir", json={"path": path})

    async def move_path(self, vm_id: str, src: str, dst: str) -> None:
        await self._request("POST", f"/vms/{vm_id}/files/move", json={"src": src, "dst": dst})

    async def delete_path(self, vm_id: str, path: str) -> None:
        await self._request("DELETE", f"/vms/{vm_id}/files", params={"path": path})

    def archive(self, vm_id: str, root: str, fmt: ArchiveFormat) -> AsyncIterator[bytes]:
        return self._stream(f"/vms/{vm_id}/archive", {"root": root, "fmt": fmt})

    async def _stream(self, path: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            async with (
                self._client(timeout=max(self.timeout, 300.0)) as client,
                client.stream("GET", path, params=params) as response,
            ):
                if not response.is_success:
                    raise _error_for(response.status_code, await response.aread())
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.HTTPError as exc:
            raise NodeUnavailable(
                f"node agent {self.base_url} unreachable: {type(exc).__name__}"
            ) from None

    async def open_terminal(self, vm_id: str, cols: int = 80, rows: int = 24) -> WebSocketTerminal:
        scheme_url = self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url = f"{scheme_url}/vms/{vm_id}/terminal?{urlencode({'cols': cols, 'rows': rows})}"
        try:
            socket = await websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                open_timeout=self.timeout,
                max_size=None,
                ssl=self._tls,
            )
        except InvalidStatus as exc:
            raise _error_for(exc.response.status_code, exc.response.body or b"") from None
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise NodeUnavailable(
                f"node agent {self.base_url} unreachable: {type(exc).__name__}"
            ) from None
        return WebSocketTerminal(socket)


class WebSocketTerminal:
    """A ``TerminalSession`` over the agent's terminal WebSocket: binary frames are data."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self._socket = socket

    async def write(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # ``read`` reports the end
            await self._socket.send(data)

    async def read(self) -> bytes:
        while True:
            try:
                message = await self._socket.recv()
            except ConnectionClosed:
                return b""
            if isinstance(message, bytes):
                return message

    async def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._socket.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def close(self) -> None:
        await self._socket.close()
