"""Authentication: Django's ModelBackend behind the login throttle, and DRF's HTTP Basic.

Entry points: ``ThrottledModelBackend`` (the only entry of ``AUTHENTICATION_BACKENDS``) and
``BasicAuthentication`` (DRF's, answering 401 on wrong credentials). Every
password check in the project goes through ``django.contrib.auth.authenticate`` and so through
here: the API login view, the admin's login form and DRF's HTTP Basic. A refused attempt
raises ``LoginThrottled`` before any password is hashed and is audited once here (Django's
``user_login_failed`` is not sent for it: no credentials were checked).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest
from rest_framework import authentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from internal_config.audit import audit_log_http, audit_log_ws, client_ip
from pequeroku.login_throttle import LoginThrottled, login_attempt_begin, login_attempt_end


def _audit_throttled(request: HttpRequest | None, username: str, exc: LoginThrottled) -> None:
    fields: dict[str, Any] = {
        "action": "login",
        "message": "throttled: too many failed logins",
        "metadata": {"username": username[:150], "retry_after": exc.wait},
        "success": False,
    }
    if request is None:
        audit_log_ws(**fields)
    else:
        audit_log_http(request, target_type="user", user=None, **fields)


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        # DRF's HTTP Basic passes its Request; the Django request underneath has the headers.
        http_request = getattr(request, "_request", request)
        ip = client_ip(http_request.META) if http_request is not None else None
        try:
            attempt = login_attempt_begin(ip, str(username))
        except LoginThrottled as exc:
            _audit_throttled(http_request, str(username), exc)
            raise
        user = None
        try:
            user = super().authenticate(request, username, password, **kwargs)
        finally:
            login_attempt_end(attempt, succeeded=user is not None)
        return user


class BasicLoginFailed(AuthenticationFailed):
    """Wrong HTTP Basic credentials: answered 401 with a Basic challenge.

    DRF answers every authentication failure with the first authenticator's challenge, and
    the session comes first (browsers must not get a Basic prompt), so it would say 403;
    ``pequeroku.errors.exception_handler`` turns this one into 401.
    """


class BasicAuthentication(authentication.BasicAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        try:
            return super().authenticate(request)
        except AuthenticationFailed as exc:
            raise BasicLoginFailed(exc.detail) from None
