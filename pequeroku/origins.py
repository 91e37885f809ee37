"""Which origins may send a browser here: the login's defence against login CSRF.

Entry points: ``origin_allowed(origin, request)``, ``require_same_site_login(request)``.

The API login needs no CSRF token (the frontend logs in with a JSON POST before it has one),
so it checks where the request comes from instead. A browser names the page's origin in
``Origin`` on every cross-origin POST (and ``Referer`` on most others); an allowed origin is
the request's own (scheme and host), one listed in ``CSRF_TRUSTED_ORIGINS`` (``*.`` wildcards
as Django allows them), or a host ``ALLOWED_HOSTS`` names, which is the rule the WebSocket
Origin check follows too (``*`` is not taken as "any origin" here). With neither header the
body must be JSON, which no cross-site HTML form can send.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.utils.http import is_same_domain

from pequeroku.errors import DomainError


class CrossOriginRefused(DomainError):
    status_code = 403
    code = "cross_origin"
    default_message = "Logins are only accepted from this site's own pages."


def _trusted_origin(origin: str) -> bool:
    parsed = urlsplit(origin)
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if trusted == origin:
            return True
        if "*" in trusted:
            pattern = urlsplit(trusted)
            if pattern.scheme == parsed.scheme and is_same_domain(
                parsed.netloc, pattern.netloc.replace("*", "", 1)
            ):
                return True
    return False


def _allowed_host(hostname: str) -> bool:
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    for pattern in allowed:
        if pattern == "*":
            continue
        pattern_host = urlsplit("//" + pattern).hostname or pattern
        if is_same_domain(hostname, pattern_host.lower()):
            return True
    return False


def origin_allowed(origin: str, request: HttpRequest) -> bool:
    """``origin`` (``scheme://host[:port]``) may act on this site through ``request``."""
    parsed = urlsplit(origin.strip().lower())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False  # includes the opaque origin "null"
    normalised = f"{parsed.scheme}://{parsed.netloc}"
    own = f"{'https' if request.is_secure() else 'http'}://{request.get_host().lower()}"
    return normalised == own or _trusted_origin(normalised) or _allowed_host(parsed.hostname)


def require_same_site_login(request: HttpRequest) -> None:
    """Raise ``CrossOriginRefused`` unless ``request`` comes from an allowed origin."""
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        referer = request.META.get("HTTP_REFERER")
        if referer:
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
    if origin is not None:
        if not origin_allowed(origin, request):
            raise CrossOriginRefused()
        return
    if request.content_type != "application/json":
        raise CrossOriginRefused(
            "A login without Origin or Referer must send JSON (Content-Type: application/json)."
        )
