"""DRF's rate throttles, keyed on the client address ``internal_config.audit.client_ip`` finds.

DRF's own ``get_ident`` believes the whole ``X-Forwarded-For`` header when ``NUM_PROXIES`` is
unset, so rotating it would reset an anonymous client's budget; here the address comes from the
one rule the audit log and the login throttle use too (``TRUSTED_PROXY_IP_HEADER`` and
``TRUSTED_PROXY_COUNT``).
"""

from __future__ import annotations

from rest_framework import throttling
from rest_framework.request import Request

from internal_config.audit import client_ip


class _ClientIP:
    def get_ident(self, request: Request) -> str:
        return client_ip(request.META) or "unknown"


class AnonRateThrottle(_ClientIP, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_ClientIP, throttling.UserRateThrottle):
    pass
