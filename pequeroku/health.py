"""Liveness and readiness endpoints: ``/healthz`` and ``/readyz``, no auth, no secrets.

- ``/healthz``: the process answers (no database, no channel layer).
- ``/readyz``: the database answers ``SELECT 1`` and the channel layer carries a message to
  a fresh channel and back; 503 naming the failed check otherwise. Error details are reduced to
  the exception class so no connection string or password can leak.

``HealthCheckMiddleware`` (first in MIDDLEWARE) answers both paths before host validation, so
container and load-balancer probes that use an IP or ``localhost`` as Host work whatever
ALLOWED_HOSTS says. The URL patterns below serve the same views for ``reverse()`` and tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache

CHANNEL_LAYER_TIMEOUT_SECONDS = 2.0
HEALTH_PATHS = frozenset({"/healthz", "/healthz/", "/readyz", "/readyz/"})


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _channel_layer_roundtrip() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readyz.ping"})
    message = await asyncio.wait_for(layer.receive(channel), CHANNEL_LAYER_TIMEOUT_SECONDS)
    if message.get("type") != "readyz.ping":
        raise RuntimeError("channel layer returned another message")


def check_channel_layer() -> None:
    async_to_sync(_channel_layer_roundtrip)()


READINESS_CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
}


def run_checks() -> tuple[bool, dict[str, str]]:
    """Run every readiness check; ``(all_ok, {name: "ok" | "error: <ExceptionClass>"})``."""
    results: dict[str, str] = {}
    for name, check in READINESS_CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure means "not ready"
            results[name] = f"error: {type(exc).__name__}"
        else:
            results[name] = "ok"
    return all(value == "ok" for value in results.values()), results


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    started = time.monotonic()
    ready, checks = run_checks()
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": checks,
        "seconds": round(time.monotonic() - started, 3),
    }
    return JsonResponse(body, status=200 if ready else 503)


class HealthCheckMiddleware:
    """Answer the probe paths before host validation, sessions or auth run."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path in HEALTH_PATHS and request.method in ("GET", "HEAD"):
            view = healthz if request.path.startswith("/healthz") else readyz
            return view(request)
        return self.get_response(request)


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
