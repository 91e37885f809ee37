"""The admin site: Django's, with a login form that explains a throttled login.

Entry points: ``PequerokuAdminSite``, ``SecretFieldsAdmin``.

``PequerokuAdminSite`` is installed as the default site by ``pequeroku.apps.AdminConfig``, so
every ``admin.register`` in the apps lands on it. A throttled login (``LoginThrottled`` from
the authentication backend) re-renders the form with a readable error, answered 429 with
``Retry-After`` like the API. ``SecretFieldsAdmin`` keeps write-only fields write-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models.constants import LOOKUP_SEP
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


class SecretFieldsAdmin(admin.ModelAdmin):
    """A ModelAdmin whose ``secret_fields`` are write-only for everyone.

    They are never usable in changelist lookups (``?auth_token__startswith=`` would let
    anyone who may list the rows read the secret one character at a time: answered 400), and
    never shown on the page of someone who may only view the row (Django renders a view-only
    form's fields as text).
    """

    secret_fields: tuple[str, ...] = ()

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if lookup.split(LOOKUP_SEP, 1)[0] in self.secret_fields:
            return False
        return super().lookup_allowed(lookup, value, request)

    def hidden_secret_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if self.has_change_permission(request, obj) else self.secret_fields

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        hidden = self.hidden_secret_fields(request, obj)
        return [name for name in super().get_fields(request, obj) if name not in hidden]
