"""PostgreSQL or Redis unavailable: a 503 with a JSON message, never a 500.

While the database restarts (or Redis, which holds the throttle counters and the channel layer),
every request that needs it fails with a driver error. Those errors are not bugs: the client is
told to retry, and the next request after the service is back succeeds without any restart
(``CONN_HEALTH_CHECKS`` replaces a dropped persistent connection; the Redis client reconnects).

Entry points:

- ``is_unavailable(exc)``: Django's ``OperationalError``/``InterfaceError`` (connection refused,
  dropped, pool exhausted) and redis-py's ``ConnectionError``/``TimeoutError``;
- ``unavailable_response(exc)``: DRF's exception handler calls it first (every API view);
- ``DatabaseUnavailableMiddleware``: the same for views outside DRF (admin, landing), last in
  ``MIDDLEWARE`` so its ``process_exception`` sees the view's exception first;
- ``SocketGuard``: wraps the WebSocket application; when the session/user lookup that runs before
  a consumer fails this way, the socket is accepted and closed with ``CLOSE_UNAVAILABLE`` instead
  of the handshake failing with a 500. Consumers send their own error event first
  (``vm_manager.ide.base``).

The response names neither the host nor the driver's message (it may hold a DSN).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin

logger = logging.getLogger("pequeroku.unavailable")

# redis-py's errors are recognised by name (a dependency of channels-redis, not imported here).
_REDIS_ERRORS = {("redis.exceptions", "ConnectionError"), ("redis.exceptions", "TimeoutError")}
MESSAGE = "The service is briefly unavailable (database or cache); try again in a few seconds."
CODE = "service_unavailable"
RETRY_AFTER_SECONDS = 5
# A socket closed because the database or Redis is unavailable (4000-4999: the application's).
CLOSE_UNAVAILABLE = 4503

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return any((cls.__module__, cls.__name__) in _REDIS_ERRORS for cls in type(exc).__mro__)


def _log(exc: BaseException, where: str) -> None:
    # The class only: the driver's text may name the host, the user or the DSN.
    logger.warning("%s: database or cache unavailable (%s)", where, exc.__class__.__name__)


def unavailable_json(exc: BaseException, where: str) -> JsonResponse | None:
    """The 503 for ``exc`` when it means the database or Redis is unavailable, else None."""
    if not is_unavailable(exc):
        return None
    _log(exc, where)
    response = JsonResponse({"detail": MESSAGE, "code": CODE}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def unavailable_response(exc: BaseException) -> Any:
    """DRF's form of the 503 (a ``Response``), for ``pequeroku.errors.exception_handler``."""
    if not is_unavailable(exc):
        return None
    from rest_framework.response import Response

    _log(exc, "api")
    return Response(
        {"detail": MESSAGE, "code": CODE},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """503 JSON for a view outside DRF that failed because the database or Redis is down.

    Sync-only, like the block of Django's middleware around it (``pequeroku.sync_middleware``):
    under ASGI the chain then crosses to a thread once, not once more for this one."""

    async_capable = False

    def process_exception(self, request: HttpRequest, exception: Exception) -> JsonResponse | None:
        return unavailable_json(exception, request.path)


class SocketGuard:
    """ASGI wrapper for the WebSocket stack: an unavailable database or Redis ends the socket
    with ``CLOSE_UNAVAILABLE`` (accepting it first if nothing had), never a handshake 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = {"accepted": False, "closed": False}

        async def tracking_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if not is_unavailable(exc) or state["closed"]:
                raise
            _log(exc, "socket")
            try:
                if not state["accepted"]:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})
            except Exception:  # the client left meanwhile: nothing to tell it
                logger.debug("socket gone before its unavailable close", exc_info=True)
