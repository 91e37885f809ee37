"""Request logging: one line per HTTP request on the ``pequeroku.request`` logger.

Text (LOG_FORMAT=text): ``GET /api/containers/ 200 12.3ms user=5``. JSON (LOG_FORMAT=json):
the formatter adds ``method``, ``path``, ``status``, ``duration_ms``, ``user_id`` and
``client_ip`` as fields. Only the path is logged, never the query string, headers, cookies or
body, so tokens and passwords cannot reach the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from pequeroku.db_errors import is_unavailable

logger = logging.getLogger("pequeroku.request")

GetResponse = Callable[[HttpRequest], Any]


def _user_id(request: HttpRequest) -> int | None:
    try:
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return None
    except Exception as exc:  # the session lookup failed: logged without its user, not a 500
        if not is_unavailable(exc):
            raise
        return None
    return user.pk


def log_request(request: HttpRequest, status: int, started: float) -> None:
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    user_id = _user_id(request)
    fields = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": duration_ms,
        "user_id": user_id,
        "client_ip": request.META.get("REMOTE_ADDR"),
    }
    level = logging.INFO
    if status == 503:  # no capacity, a node down: the service said so on purpose, not a bug
        level = logging.WARNING
    elif status >= 500:
        level = logging.ERROR
    logger.log(
        level,
        "%s %s %s %.1fms user=%s",
        request.method,
        request.path,
        status,
        duration_ms,
        user_id if user_id is not None else "-",
        extra=fields,
    )


class RequestLogMiddleware:
    """Outermost middleware: times the whole stack and logs the final status."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        started = time.monotonic()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            log_request(request, status, started)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        status = 500
        try:
            response = await self.get_response(request)
            status = response.status_code
            return response
        finally:
            log_request(request, status, started)
