"""What every container socket shares (console, editor, AI): Origin, access, limits, audit,
and access that is re-checked for as long as the socket is open.

Entry points: ``ContainerSocket`` (subclassed by the console, the editor and the AI socket),
``socket_layer_accepts(*types)`` (their ``channel_receive``), ``error_message`` (exceptions ->
client text), ``RateLimiter``.

Connect, in order: accept (a browser sees close codes only after the handshake); the Origin
must match ``ALLOWED_HOSTS`` (4403); a logged-in user (4401); a free socket slot of the user
(refusal event, then 4429); the container visible to the user (4403, 4404). Refusals are
audited at most once a minute per user, container and action.

Then the container is marked in use (an open socket keeps it from idle auto-stop: the watchdog
touches it every ``IDLE_RECHECK_SECONDS``); an idle-suspended container is resumed first, the
socket sending an ``info`` event (``send_info``) and waiting for it before it proceeds.

While open: every frame first passes a cheap access check (one cache read of the access
version; the database only when the version moved or the last check is over a second old),
so a frame that races a revocation does nothing. A ``socket.revoke`` message through the
channel layer (``access.access_changed``, sent by the receivers in ``revocation``) makes the
socket re-check at once; a socket that lost access releases what it holds and closes 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlparse

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import OriginValidator
from django.conf import settings

from internal_config.audit import audit_log_ws, audit_log_ws_refusal, scope_client_info
from pequeroku.db_errors import CLOSE_UNAVAILABLE, is_unavailable
from pequeroku.db_errors import MESSAGE as UNAVAILABLE_MESSAGE
from pequeroku.errors import DomainError
from pequeroku.layer_guard import channel_layer_accepts
from vm_manager.drivers import NodeError
from vm_manager.errors import domain_error_for
from vm_manager.idle import container_touch, container_wake
from vm_manager.models import Container

from .access import (
    CLOSE_NOT_ALLOWED,
    CLOSE_NOT_FOUND,
    CLOSE_NOT_LOGGED_IN,
    REVOKE_MESSAGE,
    SocketAccessDenied,
    SocketGrant,
    access_version,
    container_for_socket,
    container_group,
    user_group,
)
from .limits import CLOSE_TOO_MANY, TooManySockets, socket_slots

logger = logging.getLogger(__name__)

__all__ = [
    "CLOSE_NOT_ALLOWED",
    "CLOSE_NOT_FOUND",
    "CLOSE_NOT_LOGGED_IN",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_MANY",
    "ContainerSocket",
    "RateLimiter",
    "SocketAccessDenied",
    "container_for_socket",
    "error_message",
    "socket_layer_accepts",
]

CLOSE_TOO_BIG = 1009

try:  # what uvicorn raises when the app sends to a client that has gone
    from uvicorn.protocols.utils import ClientDisconnected
except ImportError:  # pragma: no cover - another server
    ClientDisconnected = ConnectionResetError  # type: ignore[assignment,misc]

try:
    from websockets.exceptions import ConnectionClosed
except ImportError:  # pragma: no cover
    ConnectionClosed = ConnectionResetError  # type: ignore[assignment,misc]


def client_gone(exc: BaseException) -> bool:
    """True for the errors of sending to a client that has just left: normal, not a fault."""
    return isinstance(
        exc, ClientDisconnected | ConnectionClosed | ConnectionResetError | BrokenPipeError
    )


# A frame re-reads access from the database at least this often, whatever the cache says.
RECHECK_SECONDS = 1.0
# An idle socket re-checks on its own this often: the safety net for a change made without
# signals (a queryset ``update``); the receivers close sockets within a second or two.
IDLE_RECHECK_SECONDS = 30.0


def socket_layer_accepts(*types: str) -> Any:
    """``channel_layer_accepts`` with the revocation message every container socket takes."""
    return channel_layer_accepts(REVOKE_MESSAGE, *types)


def origin_allowed(scope: dict[str, Any]) -> bool:
    """The rule of ``AllowedHostsOriginValidator``, checked again by the socket itself."""
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    parsed = None
    for name, value in scope.get("headers", []):
        if name == b"origin":
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                parsed = urlparse(value.decode("latin1"))
    return OriginValidator(None, allowed).valid_origin(parsed)


def error_message(exc: BaseException) -> str:
    """The text a client sees for a failed request; never an address, token or traceback."""
    if isinstance(exc, NodeError):
        exc = domain_error_for(exc)
    if isinstance(exc, DomainError):
        return exc.message
    if is_unavailable(exc):
        return UNAVAILABLE_MESSAGE
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


def _grant_for(user: Any, pk: int, session: Any) -> tuple[Container, SocketGrant]:
    container = container_for_socket(user, pk)
    return container, SocketGrant.for_connect(user, container, session)


class ContainerSocket(AsyncWebsocketConsumer):
    """Accept, check, hold a slot, follow access, bound input, never die silently."""

    channel_receive = socket_layer_accepts()
    max_frame_bytes = 64 * 1024
    rate_per_second = 50.0
    rate_burst = 100

    container: Container | None = None
    grant: SocketGrant | None = None
    revoked: bool = False

    async def connect(self) -> None:
        self.container = None
        self.grant = None
        self.revoked = False
        self._slot_user: int | None = None
        self._groups: list[str] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._released = False
        self.user = self.scope.get("user")
        self.client_ip, self.user_agent = scope_client_info(self.scope)
        self.limiter = RateLimiter(self.rate_per_second, self.rate_burst)
        await self.accept()
        if not origin_allowed(self.scope):
            await self.close(code=CLOSE_NOT_ALLOWED)
            return
        if not getattr(self.user, "is_authenticated", False):
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        pk = int(self.scope["url_route"]["kwargs"]["pk"])
        try:
            socket_slots.claim(self.user.pk)
        except TooManySockets as refused:
            await self._refuse(pk, refused.message, CLOSE_TOO_MANY, event=True)
            return
        self._slot_user = self.user.pk
        try:
            container, grant = await database_sync_to_async(_grant_for)(
                self.user, pk, self.scope.get("session")
            )
        except SocketAccessDenied as denied:
            await self._refuse(pk, denied.reason, denied.close_code)
            return
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # No audit row: the database it would go to is what is missing.
            self._release_slot()
            with contextlib.suppress(Exception):
                await self.send_refusal(UNAVAILABLE_MESSAGE, CLOSE_UNAVAILABLE)
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        self.container, self.grant = container, grant
        self._version = await self._access_version()
        self._checked_at = time.monotonic()
        await self._join(user_group(self.user.pk), container_group(container.pk))
        self._watchdog = asyncio.create_task(self._watch(), name=f"{self.socket_name}-access")
        await self.audit("ws.connect", pk, f"{self.socket_name} connected")
        try:
            await self._wake()
            await self.on_connected()
        except Exception as exc:
            await self._report(exc)

    async def _refuse(self, pk: int, reason: str, code: int, *, event: bool = False) -> None:
        self._release_slot()
        if event:
            with contextlib.suppress(Exception):
                await self.send_refusal(reason, code)
        await database_sync_to_async(audit_log_ws_refusal)(
            action="ws.connect",
            user=self.user,
            ip=self.client_ip,
            user_agent=self.user_agent,
            target_type="container",
            target_id=pk,
            message=f"{self.socket_name}: {reason}"[:500],
            metadata={"code": code},
        )
        await self.close(code=code)

    async def _join(self, *groups: str) -> None:
        if self.channel_layer is None:
            return
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self._groups.append(group)

    def _release_slot(self) -> None:
        if self._slot_user is not None:
            socket_slots.release(self._slot_user)
            self._slot_user = None

    async def _release(self) -> None:
        """Leave the groups, give the slot back, let the subclass let go (once)."""
        if self._released:
            return
        self._released = True
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        for group in self._groups:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(group, self.channel_name)
        self._groups = []
        self._release_slot()
        if self.container is not None:
            await self.on_disconnected()

    async def disconnect(self, code: int) -> None:
        logger.debug("%s socket closed (code %s)", self.socket_name, code)
        if getattr(self, "_slot_user", None) is None and self.container is None:
            return
        try:
            await self._release()
        finally:
            if self.container is not None and not self.revoked:
                await self.audit(
                    "ws.disconnect",
                    self.container.pk,
                    f"{self.socket_name} disconnected",
                    metadata={"code": code},
                )

    # -- access for as long as the socket is open -------------------------------------------

    async def _access_version(self) -> tuple[int, int]:
        assert self.grant is not None  # noqa: S101
        return await database_sync_to_async(access_version)(
            self.grant.user_pk, self.grant.container_pk
        )

    async def still_allowed(self, *, force: bool = False) -> bool:
        """False once access is gone (and the socket is closed with 4403)."""
        if self.revoked or self.grant is None:
            return False
        version = await self._access_version()
        fresh = time.monotonic() - self._checked_at < RECHECK_SECONDS
        if not force and fresh and version == self._version:
            return True
        valid = await database_sync_to_async(self.grant.still_valid)()
        self._version, self._checked_at = version, time.monotonic()
        if not valid:
            await self.revoke()
        return valid

    async def revoke(self) -> None:
        """Access is gone: stop everything the socket does, audit once, close 4403."""
        if self.revoked:
            return
        self.revoked = True
        assert self.container is not None  # noqa: S101
        try:
            await self._release()
        finally:
            await self.audit(
                "ws.revoked",
                self.container.pk,
                f"{self.socket_name} closed: access revoked",
                metadata={"code": CLOSE_NOT_ALLOWED},
            )
            with contextlib.suppress(Exception):
                await self.close(code=CLOSE_NOT_ALLOWED)

    async def socket_revoke(self, message: dict[str, Any]) -> None:
        """Channel-layer message: something this socket's access depends on changed."""
        if self.revoked or self.grant is None:
            return
        ended = message.get("session_key")
        if ended is not None and ended == self.grant.session_key:
            await self.revoke()  # logged out: its session is being flushed right now
            return
        await self.still_allowed(force=True)

    async def _wake(self) -> None:
        """Mark the container in use; resume it (telling the client) when it sleeps."""
        assert self.container is not None  # noqa: S101
        if not self.container.idle_suspended:
            await database_sync_to_async(container_touch)(self.container)
            return
        await self.send_info("Resuming the container after it was idle...")
        fresh = await database_sync_to_async(container_wake)(self.container)
        # Keep the row the access checks loaded (its node is already there for async code).
        for name in ("status", "status_reason", "desired_state", "suspended", "last_boot"):
            setattr(self.container, name, getattr(fresh, name))
        await self.send_info("Container resumed")

    async def _watch(self) -> None:
        while not self.revoked:
            await asyncio.sleep(IDLE_RECHECK_SECONDS)
            try:
                if self.container is not None:
                    await database_sync_to_async(container_touch)(self.container)
                await self.still_allowed(force=True)
            except Exception:
                logger.warning("%s socket access re-check failed", self.socket_name, exc_info=True)

    # -- frames --------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.container is None or self.revoked:
            return
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > self.max_frame_bytes:
            await self.send_error(f"message larger than {self.max_frame_bytes} bytes")
            return
        if not self.limiter.allow():
            await self.send_error("too many messages, slow down")
            return
        if not await self.still_allowed():
            return
        try:
            await self.on_frame(text_data, bytes_data)
        except Exception as exc:
            await self._report(exc)

    async def _report(self, exc: Exception, req_id: Any = None) -> None:
        """Every failure becomes an error event; unexpected ones are logged with a traceback.

        A client that left while its answer was being sent is a normal end: logged at debug,
        nothing sent (there is nobody to send to).
        """
        if client_gone(exc):
            logger.debug("%s socket: the client left before its answer was sent", self.socket_name)
            return
        if is_unavailable(exc):
            logger.warning("%s socket: database or cache unavailable", self.socket_name)
        elif not isinstance(exc, DomainError | NodeError):
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
        """Release what the socket holds (disconnect or revocation; called once)."""

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        raise NotImplementedError

    async def send_error(self, message: str, req_id: Any = None) -> None:
        raise NotImplementedError

    async def send_info(self, message: str) -> None:
        """A progress notice (interfaces.md's info event); subclasses with another event shape
        override it."""
        await self.send_json({"type": "info", "message": message})

    async def send_refusal(self, message: str, code: int) -> None:
        """The event sent before a refusal's close code (default: an error event)."""
        await self.send_error(message)
