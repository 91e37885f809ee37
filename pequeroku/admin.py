"""The admin site: Django's, with a login form that explains a throttled login.

``PequerokuAdminSite`` is installed as the default site by ``pequeroku.apps.AdminConfig``, so
every ``admin.register`` in the apps lands on it. A throttled login (``LoginThrottled`` from
the authentication backend) re-renders the form with a readable error, answered 429 with
``Retry-After`` like the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from pequeroku.login_throttle import LoginThrottled


class ThrottleAwareLoginForm(AdminAuthenticationForm):
    retry_after: int | None = None

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except LoginThrottled as exc:
            self.retry_after = int(exc.wait or 1)
            raise ValidationError(
                "Too many failed logins for this account or from this address. "
                "Try again in %(seconds)d seconds.",
                code="throttled",
                params={"seconds": self.retry_after},
            ) from None


class PequerokuAdminSite(admin.AdminSite):
    login_form = ThrottleAwareLoginForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response: HttpResponse = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        retry_after = getattr(form, "retry_after", None)
        if retry_after is not None:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response
