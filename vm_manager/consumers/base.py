"""What both IDE sockets share: access checks and close codes, limits, error events, audit.

Entry points: ``ContainerSocket`` (subclassed by the console and the editor),
``container_for_socket`` (the access rule), ``error_message`` (exceptions -> client text),
``RateLimiter``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from internal_config.audit import audit_log_ws, scope_client_info
from pequeroku.errors import DomainError
from vm_manager.drivers import NodeError
from vm_manager.errors import ContainerMissing, ContainerNotVisible, domain_error_for
from vm_manager.models import Container
from vm_manager.selectors import live_visible_container

logger = logging.getLogger(__name__)

CLOSE_NOT_LOGGED_IN = 4401
CLOSE_NOT_ALLOWED = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_BIG = 1009


class SocketAccessDenied(Exception):
    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


def container_for_socket(user: Any, pk: int) -> Container:
    """The container ``user`` may open, or ``SocketAccessDenied`` with the contract's code."""
    if not getattr(user, "is_authenticated", False):
        raise SocketAccessDenied(CLOSE_NOT_LOGGED_IN, "not logged in")
    try:
        return live_visible_container(user, pk)
    except ContainerNotVisible as exc:
        raise SocketAccessDenied(exc.close_code, "not allowed") from None
    except ContainerMissing as exc:
        raise SocketAccessDenied(exc.close_code, "no such container") from None


def error_message(exc: BaseException) -> str:
    """The text a client sees for a failed request; never an address, token or traceback."""
    if isinstance(exc, NodeError):
        exc = domain_error_for(exc)
    if isinstance(exc, DomainError):
        return exc.message
    return "internal error"


class RateLimiter:
    """A token bucket: ``rate`` frames per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ContainerSocket(AsyncWebsocketConsumer):
    """Accept, check access (closing 4401/4403/4404), bound input, never die silently."""

    max_frame_bytes = 64 * 1024
    rate_per_second = 50.0
    rate_burst = 100

    container: Container | None = None

    async def connect(self) -> None:
        self.container = None
        self.user = self.scope.get("user")
        self.client_ip, self.user_agent = scope_client_info(self.scope)
        self.limiter = RateLimiter(self.rate_per_second, self.rate_burst)
        # Close codes reach a browser only after the handshake; a refused handshake is 1006.
        await self.accept()
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        try:
            container = await database_sync_to_async(container_for_socket)(self.user, pk)
        except SocketAccessDenied as denied:
            if denied.close_code != CLOSE_NOT_LOGGED_IN:
                await self.audit("ws.connect", pk, denied.reason, success=False)
            await self.close(code=denied.close_code)
            return
        self.container = container
        await self.audit("ws.connect", pk, f"{self.socket_name} connected")
        try:
            await self.on_connected()
        except Exception as exc:
            await self._report(exc)

    async def disconnect(self, code: int) -> None:
        if self.container is None:
            return
        try:
            await self.on_disconnected()
        finally:
            await self.audit(
                "ws.disconnect",
                self.container.pk,
                f"{self.socket_name} disconnected",
                metadata={"code": code},
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.container is None:
            return
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > self.max_frame_bytes:
            await self.send_error(f"message larger than {self.max_frame_bytes} bytes")
            return
        if not self.limiter.allow():
            await self.send_error("too many messages, slow down")
            return
        try:
            await self.on_frame(text_data, bytes_data)
        except Exception as exc:
            await self._report(exc)

    async def _report(self, exc: Exception, req_id: Any = None) -> None:
        """Every failure becomes an error event; unexpected ones are logged with a traceback."""
        if not isinstance(exc, DomainError | NodeError):
            logger.exception("%s socket request failed", self.socket_name)
        await self.send_error(error_message(exc), req_id)

    async def audit(
        self,
        action: str,
        target_id: int,
        message: str,
        *,
        success: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        await database_sync_to_async(audit_log_ws)(
            action=action,
            user=self.user,
            ip=self.client_ip,
            user_agent=self.user_agent,
            target_type="container",
            target_id=target_id,
            message=message[:500],
            metadata=metadata,
            success=success,
        )

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload, ensure_ascii=False))

    # -- for subclasses --------------------------------------------------------------------

    socket_name = "socket"

    async def on_connected(self) -> None:
        """Runs after the access checks passed."""

    async def on_disconnected(self) -> None:
        """Release what the socket holds."""

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        raise NotImplementedError

    async def send_error(self, message: str, req_id: Any = None) -> None:
        raise NotImplementedError
