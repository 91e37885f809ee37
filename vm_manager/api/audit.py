"""One AuditLog row per API action, written when the action ends, whether it worked or not."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404
from rest_framework.exceptions import APIException
from rest_framework.request import Request

from internal_config.audit import audit_log_http
from pequeroku.errors import DomainError


@dataclass
class AuditEntry:
    target_id: str | int | None = None
    message: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, Http404):
        return "not_found: no such object, or not visible to this user"
    if isinstance(exc, APIException):
        detail = exc.detail
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
        return f"{exc.default_code}: {text}"
    return f"error: {type(exc).__name__}"


@contextlib.contextmanager
def audited(
    request: Request,
    action: str,
    *,
    target_type: str = "container",
    target_id: str | int | None = None,
    metadata: dict[str, Any] | None = None,
    failures_only: bool = False,
    deferred: bool = False,
) -> Iterator[AuditEntry]:
    """Write ``action``'s row: success, or ``success=False`` with the reason, then re-raise.

    ``failures_only``: the service writes the success row itself (with the change it made).
    ``deferred``: a polled read; its row is batched off the request path.
    """
    entry = AuditEntry(target_id=target_id, metadata=dict(metadata or {}))
    try:
        yield entry
    except Exception as exc:
        audit_log_http(
            request,
            action=action,
            target_type=target_type,
            target_id=entry.target_id,
            message=failure_reason(exc)[:1000],
            metadata=entry.metadata,
            success=False,
            deferred=deferred,
        )
        raise
    if failures_only:
        return
    audit_log_http(
        request,
        action=action,
        target_type=target_type,
        target_id=entry.target_id,
        message=entry.message,
        metadata=entry.metadata,
        success=True,
        deferred=deferred,
    )
