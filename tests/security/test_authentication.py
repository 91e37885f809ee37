"""H1, H3, M6 and L7: how a stranger may try passwords, and from where."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from django.test import Client
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from internal_config.models import AuditLog
from tests.support.api import basic

pytestmark = pytest.mark.django_db

PROXY_HOP = "198.51.100.7"  # what our (single, trusted) proxy saw and appended


def forwarded(spoofed: int) -> dict[str, str]:
    """An X-Forwarded-For whose client-written part changes on every request."""
    return {"HTTP_X_FORWARDED_FOR": f"203.0.113.{spoofed}, {PROXY_HOP}"}


@pytest.fixture
def behind_one_proxy(settings):
    settings.TRUSTED_PROXY_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.TRUSTED_PROXY_COUNT = 1


# -- H1: one failed login is one password check ---------------------------------------------


@pytest.mark.parametrize("username", ["alice", "nobody"], ids=["known-user", "unknown-user"])
def test_a_failed_basic_login_costs_one_password_hash_and_one_audit_row(
    user, hasher_calls, username
):
    client = APIClient(HTTP_AUTHORIZATION=basic(username, "wrong"))

    response = client.get("/api/containers/")

    assert response.status_code == 401
    assert hasher_calls() == 1
    rows = AuditLog.objects.filter(action="login", success=False)
    assert rows.count() == 1
    assert rows.get().metadata == {"username": username}


# -- H3: password guessing through every door ------------------------------------------------


def test_eleven_wrong_admin_logins_with_rotating_forwarded_for_are_throttled(
    user, password, behind_one_proxy, hasher_calls
):
    client = Client()
    statuses = [
        client.post(
            "/admin/login/", {"username": "alice", "password": f"guess{n}"}, **forwarded(n)
        ).status_code
        for n in range(11)
    ]
    hashed_before_the_right_password = hasher_calls()

    right = client.post(
        "/admin/login/", {"username": "alice", "password": password}, **forwarded(99)
    )

    assert statuses == [200] * 10 + [429]
    assert right.status_code == 429
    assert int(right["Retry-After"]) > 0
    assert "Too many failed logins" in right.content.decode()
    assert "_auth_user_id" not in client.session
    assert hasher_calls() == hashed_before_the_right_password == 10  # refused unhashed


def test_http_basic_guessing_is_throttled_and_refuses_the_right_password(user, password):
    statuses = [
        APIClient(HTTP_AUTHORIZATION=basic("alice", f"guess{n}")).get("/api/containers/")
        for n in range(11)
    ]

    right = APIClient(HTTP_AUTHORIZATION=basic("alice", password)).get("/api/containers/")

    assert [r.status_code for r in statuses] == [401] * 10 + [429]
    assert right.status_code == 429
    assert right.json()["code"] == "throttled"
    assert int(right["Retry-After"]) > 0


def test_rotating_forwarded_for_does_not_reset_the_address_budget(
    user, password, behind_one_proxy, settings
):
    settings.LOGIN_FAILURES_PER_IP = 5
    client = APIClient()
    for n in range(5):
        client.post(
            "/api/user/login/",
            {"username": f"victim{n}", "password": "guess"},
            format="json",
            **forwarded(n),
        )

    response = client.post(
        "/api/user/login/",
        {"username": "alice", "password": password},
        format="json",
        **forwarded(50),
    )

    assert response.status_code == 429


def test_rotating_forwarded_for_does_not_reset_the_anonymous_api_rate(
    db, behind_one_proxy, monkeypatch
):
    rates = {"anon": "3/min", "user": "9/min", "login": "100/min"}  # 6faf012 had a login rate
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    body = {"username": "someone", "password": "x"}
    statuses = [
        APIClient().post("/api/user/login/", body, format="json", **forwarded(n)).status_code
        for n in range(4)
    ]

    assert statuses == [400, 400, 400, 429]


def test_each_failure_past_the_limit_doubles_the_lockout(user, settings, monkeypatch):
    settings.LOGIN_FAILURES_PER_USERNAME = 2
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])  # the cache's expiry follows it too
    client = APIClient()

    def attempt() -> Response:
        return client.post(
            "/api/user/login/", {"username": "alice", "password": "x"}, format="json"
        )

    assert attempt().status_code == 400  # free
    waits = []
    for _ in range(3):
        assert attempt().status_code == 400  # checked, and locks the username
        refused = attempt()
        assert refused.status_code == 429
        waits.append(int(refused["Retry-After"]))
        now[0] += waits[-1]

    assert waits == [60, 120, 240]


# -- M6: login CSRF ---------------------------------------------------------------------------


def test_a_cross_origin_form_login_is_refused(user, password):
    client = APIClient(enforce_csrf_checks=True)

    response = client.post(
        "/api/user/login/",
        urlencode({"username": "alice", "password": password}),
        content_type="application/x-www-form-urlencoded",
        HTTP_ORIGIN="https://evil.test",
    )

    assert response.status_code == 403
    assert response.json()["code"] == "cross_origin"
    assert "sessionid" not in response.cookies
    row = AuditLog.objects.get(action="login")
    assert not row.success and row.message.startswith("cross_origin")


def test_a_form_login_with_a_foreign_referer_and_no_origin_is_refused(user, password):
    response = APIClient().post(
        "/api/user/login/",
        urlencode({"username": "alice", "password": password}),
        content_type="application/x-www-form-urlencoded",
        HTTP_REFERER="https://evil.test/page.html",
    )

    assert response.status_code == 403


def test_a_form_login_naming_no_origin_at_all_is_refused(user, password):
    response = APIClient().post(
        "/api/user/login/",
        urlencode({"username": "alice", "password": password}),
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 403


# -- L7: what anonymous visitors can read ----------------------------------------------------


@pytest.mark.parametrize("path", ["/api/schema/", "/api/schema/swagger-ui/", "/api/schema/redoc/"])
def test_anonymous_visitors_cannot_read_the_api_schema(db, path):
    assert APIClient().get(path).status_code == 403
