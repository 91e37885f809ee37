"""The login throttle's bookkeeping: what a success gives back, how an operator lifts a lock."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def login(username: str, password: str, ip: str = "192.0.2.1") -> int:
    return (
        APIClient()
        .post(
            "/api/user/login/",
            {"username": username, "password": password},
            format="json",
            REMOTE_ADDR=ip,
        )
        .status_code
    )


def test_successful_logins_never_count_toward_a_lockout(user, password, settings):
    settings.LOGIN_FAILURES_PER_USERNAME = 3

    statuses = [login("alice", password) for _ in range(10)]

    assert statuses == [200] * 10


def test_usernames_differing_only_in_case_share_one_budget(user, settings):
    settings.LOGIN_FAILURES_PER_USERNAME = 2

    statuses = [login(name, "wrong") for name in ("alice", "Alice", "ALICE")]

    assert statuses == [400, 400, 429]


def test_login_unlock_lifts_a_lockout(user, password, capsys):
    for _ in range(10):
        login("alice", "wrong")
    assert login("alice", password) == 429

    call_command("login_unlock", "alice", "--ip", "192.0.2.1")

    assert login("alice", password) == 200
    assert "failed logins forgotten for alice and 192.0.2.1" in capsys.readouterr().out


def test_login_unlock_refuses_a_malformed_address(db):
    with pytest.raises(CommandError, match="not an IP address"):
        call_command("login_unlock", "alice", "--ip", "nope")
