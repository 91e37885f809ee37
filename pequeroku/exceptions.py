"""One place that turns domain errors into HTTP responses.

Every app raises subclasses of its own base error (``vm_manager.errors.VMManagerError`` ...),
each carrying ``status_code``, ``code`` and a message; DRF renders them as
``{"detail": ..., "code": ...}`` like its own errors.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from pequeroku.auth import BasicLoginFailed
from pequeroku.errors import DomainError

BASIC_CHALLENGE = 'Basic realm="api"'


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(
            {"detail": exc.message, "code": exc.code},
            status=exc.status_code,
        )
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
