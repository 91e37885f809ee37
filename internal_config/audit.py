"""Writing the audit trail from HTTP requests and WebSocket scopes.

Entry points: ``audit_log_http(request, ...)``, ``audit_log_ws(...)``, ``client_ip(meta)``.
An audit write never breaks the action it records: failures are logged and swallowed.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from internal_config.models import AuditLog

logger = logging.getLogger(__name__)

MAX_USER_AGENT = 512


def _valid_ip(raw: str | None) -> str | None:
    if not raw:
        return None
    candidate = raw.strip()
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def client_ip(meta: dict[str, Any]) -> str | None:
    """REMOTE_ADDR, or the first address of the trusted proxy header when one is configured."""
    header = settings.TRUSTED_PROXY_IP_HEADER
    if header and meta.get(header):
        forwarded = _valid_ip(str(meta[header]).split(",")[0])
        if forwarded:
            return forwarded
    return _valid_ip(meta.get("REMOTE_ADDR"))


def _write(**fields: Any) -> AuditLog | None:
    fields["user_agent"] = (fields.get("user_agent") or "")[:MAX_USER_AGENT]
    fields["target_id"] = "" if fields.get("target_id") is None else str(fields["target_id"])
    fields["metadata"] = fields.get("metadata") or {}
    try:
        # A savepoint, so a failed write cannot poison the caller's transaction.
        with transaction.atomic():
            return AuditLog.objects.create(**fields)
    except Exception:
        logger.exception("could not write audit log %s", fields.get("action"))
        return None


def audit_log_http(
    request: HttpRequest,
    *,
    action: str,
    target_type: str = "",
    target_id: str | int | None = None,
    message: str = "",
    metadata: dict[str, Any] | None = None,
    success: bool = True,
    user: Any = None,
) -> AuditLog | None:
    if user is None:
        request_user = getattr(request, "user", None)
        user = request_user if getattr(request_user, "is_authenticated", False) else None
    return _write(
        user=user,
        action=action,
        target_type=target_type,
        target_id=target_id,
        message=message,
        metadata=metadata,
        ip=client_ip(request.META),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        success=success,
    )


def audit_log_ws(
    *,
    action: str,
    user: Any = None,
    ip: str | None = None,
    user_agent: str = "",
    target_type: str = "",
    target_id: str | int | None = None,
    message: str = "",
    metadata: dict[str, Any] | None = None,
    success: bool = True,
) -> AuditLog | None:
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    return _write(
        user=user,
        action=action,
        target_type=target_type,
        target_id=target_id,
        message=message,
        metadata=metadata,
        ip=_valid_ip(ip),
        user_agent=user_agent,
        success=success,
    )


def scope_client_info(scope: dict[str, Any]) -> tuple[str | None, str]:
    """(ip, user agent) of a Channels scope, honouring the trusted proxy header."""
    headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
    meta: dict[str, Any] = {
        "REMOTE_ADDR": (scope.get("client") or [None])[0],
    }
    header = settings.TRUSTED_PROXY_IP_HEADER
    if header.startswith("HTTP_"):
        meta[header] = headers.get(header[5:].lower().replace("_", "-"))
    return client_ip(meta), headers.get("user-agent", "")
