"""Writing the audit trail from HTTP requests and WebSocket scopes.

Entry points: ``audit_log_http(request, ..., deferred=False)``, ``audit_log_ws(...)``,
``audit_log_ws_refusal(...)`` (at most one row a minute per user, container and action),
``client_ip(meta)``, ``redact_secrets(text)``. An audit write never breaks the action it
records: failures are logged and swallowed.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from internal_config.audit_batch import audit_defer
from internal_config.models import AuditLog

logger = logging.getLogger(__name__)

MAX_USER_AGENT = 512
# ``audit_log_http``'s default: the row's user is whoever the request is authenticated as.
REQUEST_USER: Any = object()


def _valid_ip(raw: str | None) -> str | None:
    if not raw:
        return None
    candidate = raw.strip()
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def client_ip(meta: dict[str, Any]) -> str | None:
    """The client's address: REMOTE_ADDR, or the right-most untrusted hop of the proxy header.

    Each trusted proxy appends the address it received the request from, so with
    ``TRUSTED_PROXY_COUNT`` proxies the client is that many entries from the right; whatever
    stands further left was written by the client and is never believed.
    """
    header = settings.TRUSTED_PROXY_IP_HEADER
    if header and meta.get(header):
        hops = [hop.strip() for hop in str(meta[header]).split(",") if hop.strip()]
        count = max(1, settings.TRUSTED_PROXY_COUNT)
        if hops:
            forwarded = _valid_ip(hops[-count] if len(hops) >= count else hops[0])
            if forwarded:
                return forwarded
    return _valid_ip(meta.get("REMOTE_ADDR"))


# Typed secrets that commands commonly carry; what is kept says which rule matched.
_SECRET_NAMES = "password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key"  # noqa: S105
_SECRET_PATTERNS = (
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), r"\1***@"),
    # Authorization: Bearer xyz / Basic xyz / token xyz
    (
        re.compile(r"(?i)\b(authorization:?\s*['\"]?\s*(?:bearer|basic|token)\s+)[^\s'\"]+"),
        r"\1***",
    ),
    # password=..., API_KEY: ..., --token ... (a flag's value may follow a space)
    (
        re.compile(
            rf"(?i)((?:\b[\w-]*(?:{_SECRET_NAMES})[\w-]*[\"']?\s*[=:]"
            rf"|(?<![\w-])--?[\w-]*(?:{_SECRET_NAMES})[\w-]*\s)\s*['\"]?)[^\s'\"&]+"
        ),
        r"\1***",
    ),
    # Well-known token shapes (GitHub, OpenAI-style, AWS, Slack).
    (re.compile(r"\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}"), "***"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "***"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "***"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "***"),
)


def redact_secrets(text: str) -> str:
    """``text`` with credentials a user typed replaced by ``***``, for audit rows."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _write(*, deferred: bool = False, **fields: Any) -> AuditLog | None:
    fields["user_agent"] = (fields.get("user_agent") or "")[:MAX_USER_AGENT]
    fields["target_id"] = "" if fields.get("target_id") is None else str(fields["target_id"])
    fields["metadata"] = fields.get("metadata") or {}
    if deferred and settings.AUDIT_DEFER_SECONDS > 0:
        try:
            audit_defer(fields)
            return None
        except OSError:  # the spool folder is missing its volume or full: write the row now
            logger.exception("could not spool audit log %s; writing it now", fields.get("action"))
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
    user: Any = REQUEST_USER,
    deferred: bool = False,
) -> AuditLog | None:
    """One row for ``request``; ``user=None`` records an anonymous actor without touching
    ``request.user`` (reading it on a DRF request authenticates again). ``deferred``: a polled
    read's row, batched off the request path (``internal_config.audit_batch``)."""
    if user is REQUEST_USER:
        request_user = getattr(request, "user", None)
        user = request_user if getattr(request_user, "is_authenticated", False) else None
    elif user is not None and not getattr(user, "is_authenticated", False):
        user = None
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
        deferred=deferred,
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


REFUSAL_WINDOW = timedelta(minutes=1)


def audit_log_ws_refusal(
    *,
    action: str,
    user: Any,
    target_type: str,
    target_id: str | int,
    **fields: Any,
) -> AuditLog | None:
    """A refused socket action, unless the same one was recorded within the last minute.

    A stale browser tab reconnecting every half second would otherwise write rows forever;
    one indexed read replaces the write. Two workers racing may both write: at most a couple
    of rows a minute, never a stream.
    """
    if getattr(user, "is_authenticated", False):
        recent = AuditLog.objects.filter(
            user=user,
            created_at__gte=timezone.now() - REFUSAL_WINDOW,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            success=False,
        )
        if recent.exists():
            return None
    return audit_log_ws(
        action=action,
        user=user,
        target_type=target_type,
        target_id=target_id,
        success=False,
        **fields,
    )


def scope_client_info(scope: dict[str, Any]) -> tuple[str | None, str]:
    """(ip, user agent) of a Channels scope, honouring the trusted proxy header."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin1").lower(), raw_value.decode("latin1")
        # Repeated headers are one comma-separated list, as Django builds META.
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    meta: dict[str, Any] = {
        "REMOTE_ADDR": (scope.get("client") or [None])[0],
    }
    header = settings.TRUSTED_PROXY_IP_HEADER
    if header.startswith("HTTP_"):
        meta[header] = headers.get(header[5:].lower().replace("_", "-"))
    return client_ip(meta), headers.get("user-agent", "")
