"""pequeroku.sync_middleware: the same middleware, run sync-only, behaves the same under ASGI."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import AsyncClient, override_settings
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from pequeroku.sync_middleware import sync_chain

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_async_capable_mixin_of_the_settings_gets_a_sync_only_twin() -> None:
    chain = sync_chain(settings.MIDDLEWARE)

    for original, swapped in zip(settings.MIDDLEWARE, chain, strict=True):
        cls = import_string(original)
        if issubclass(cls, MiddlewareMixin) and cls.async_capable:
            twin = import_string(swapped)
            assert issubclass(twin, cls)
            assert twin.async_capable is False
        else:
            assert swapped == original


@override_settings(MIDDLEWARE=sync_chain(settings.MIDDLEWARE))
async def test_sessions_csrf_and_security_headers_work_the_same(user, password) -> None:
    client = AsyncClient(enforce_csrf_checks=True)

    login = await client.post(
        "/api/user/login/",
        {"username": user.username, "password": password},
        content_type="application/json",
    )
    me = await client.get("/api/user/me/")
    refused = await client.post("/api/user/logout/")

    assert login.status_code == 200
    assert me.status_code == 200 and me.json()["username"] == user.username
    assert me.headers["X-Frame-Options"] == "DENY"
    assert refused.status_code == 403  # CSRF still enforced
