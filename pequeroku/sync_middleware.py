"""Django's middleware marked sync-only, so that under ASGI a request crosses to a thread once.

Entry point: ``sync_chain(middleware)``: the same list with each middleware of ``SYNC_ONLY``
replaced by its sync-only twin from this module (same code, ``async_capable = False``).

Why: Django's own middleware (``MiddlewareMixin``) is async-capable, but does its work in sync
``process_request``/``process_response`` methods. Under ASGI each such middleware therefore
crosses from the event loop to a thread and back for each of them, and the sync-only
``HealthCheckMiddleware`` in the middle adds two more crossings: ``bench/api.py --profile``
counts 34 crossings for one trivial request. With the whole block sync-only, Django adapts it
once: one crossing into a thread, the block and the (sync) view run there, one crossing back,
which is what WSGI does without any. ``bench/api.py --sync-middleware`` measures the change.
The async-capable ``RequestLogMiddleware`` stays outermost and async.
"""

from __future__ import annotations

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware


def _sync_only(cls: type) -> type:
    return type(cls.__name__, (cls,), {"async_capable": False, "__module__": __name__})


SyncSecurityMiddleware = _sync_only(SecurityMiddleware)
SyncWhiteNoiseMiddleware = _sync_only(WhiteNoiseMiddleware)
SyncSessionMiddleware = _sync_only(SessionMiddleware)
SyncCommonMiddleware = _sync_only(CommonMiddleware)
SyncCsrfViewMiddleware = _sync_only(CsrfViewMiddleware)
SyncAuthenticationMiddleware = _sync_only(AuthenticationMiddleware)
SyncMessageMiddleware = _sync_only(MessageMiddleware)
SyncXFrameOptionsMiddleware = _sync_only(XFrameOptionsMiddleware)

SYNC_ONLY = {
    "django.middleware.security.SecurityMiddleware": "SyncSecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware": "SyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware": "SyncSessionMiddleware",
    "django.middleware.common.CommonMiddleware": "SyncCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware": "SyncCsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware": "SyncAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware": "SyncMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": "SyncXFrameOptionsMiddleware",
}


def sync_chain(middleware: list[str]) -> list[str]:
    """``middleware`` with Django's own entries swapped for their sync-only twins."""
    return [f"{__name__}.{SYNC_ONLY[path]}" if path in SYNC_ONLY else path for path in middleware]
