"""Receivers: seed Config defaults after migrate; audit logins, logouts and failed logins."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django.http import HttpRequest

from internal_config.audit import audit_log_http, audit_log_ws
from internal_config.services import config_seed_defaults


@receiver(post_migrate, dispatch_uid="internal_config.create_default_configs")
def create_default_configs(sender: AppConfig, **kwargs: Any) -> None:
    if sender.name == "internal_config":
        config_seed_defaults()


@receiver(user_logged_in, dispatch_uid="internal_config.audit_login")
def audit_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is not None:
        audit_log_http(request, action="login", target_type="user", target_id=user.pk, user=user)


@receiver(user_logged_out, dispatch_uid="internal_config.audit_logout")
def audit_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is not None and user is not None:
        audit_log_http(request, action="logout", target_type="user", target_id=user.pk, user=user)


@receiver(user_login_failed, dispatch_uid="internal_config.audit_login_failed")
def audit_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]
    if request is not None:
        # DRF's HTTP Basic hands over its own Request, whose ``.user`` would authenticate
        # again (and fail again, recursively); the actor of a failed login is anonymous.
        audit_log_http(
            getattr(request, "_request", request),
            action="login",
            target_type="user",
            message="invalid credentials",
            metadata={"username": username},
            success=False,
            user=None,
        )
    else:
        audit_log_ws(
            action="login",
            message="invalid credentials",
            metadata={"username": username},
            success=False,
        )
