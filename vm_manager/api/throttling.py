"""Login attempts are limited per client IP and username (rate ``login`` in settings)."""

from __future__ import annotations

import hashlib

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from internal_config.audit import client_ip


def login_username(request: Request) -> str:
    """The username a login request names, as given (``""`` when the body has none)."""
    data = request.data
    return str(data.get("username", ""))[:150] if isinstance(data, dict) else ""


class LoginRateThrottle(SimpleRateThrottle):
    scope = "login"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        username = login_username(request).strip().lower()
        ip = client_ip(request.META) or "unknown"
        # Hashed: the key must stay short and free of characters a cache backend rejects.
        ident = hashlib.sha256(f"{ip}|{username}".encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}
