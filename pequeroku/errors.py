"""Domain errors and the one place that turns them into HTTP responses.

Entry points: ``DomainError`` (the base every app subclasses with a status, a code, a message
and the close code a socket ends with), ``exception_handler`` (DRF's ``EXCEPTION_HANDLER``:
every error becomes ``{"detail", "code"}`` like DRF's own; the database or Redis unavailable
becomes a 503, ``pequeroku.db_errors``).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

BASIC_CHALLENGE = 'Basic realm="api"'


class DomainError(Exception):
    status_code: int = 400
    code: str = "error"
    default_message: str = "The request could not be completed."
    # What a socket closes with when this error ends it (4000-4999 are the application's).
    close_code: int = 4400

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        super().__init__(self.message)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Imported here: models import their apps' errors, and the auth backend needs the models.
    from pequeroku.auth import BasicLoginFailed
    from pequeroku.db_errors import unavailable_response

    if (unavailable := unavailable_response(exc)) is not None:  # database or Redis down: 503
        return unavailable
    if isinstance(exc, DomainError):
        return Response({"detail": exc.message, "code": exc.code}, status=exc.status_code)
    # DRF converts these two itself, but after that the original exception would not carry
    # a code; converting first keeps every error {"detail", "code"}.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException) and isinstance(response.data, dict):
        if "detail" in response.data:
            response.data.setdefault("code", getattr(exc.detail, "code", exc.default_code))
        else:
            response.data = {
                "detail": "Invalid input.",
                "code": "invalid",
                "errors": response.data,
            }
    elif isinstance(response.data, list):
        response.data = {"detail": " ".join(map(str, response.data)), "code": "invalid"}
    if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
        response.data["code"] = "throttled"
    if isinstance(exc, BasicLoginFailed):
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response["WWW-Authenticate"] = BASIC_CHALLENGE
    return response
