"""The login throttle's bookkeeping: what a success gives back, how an operator lifts a lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.core.cache.backends.redis import RedisCache
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from pequeroku import login_throttle
from tests.support.redis_keys import integration_redis_url, redis_keys_delete

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


@pytest.fixture
def two_workers_on_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RedisCache]]:
    """Two cache clients with their own connections to the test Redis, one key prefix."""
    url = integration_redis_url()
    prefix = f"pequeroku-test-throttle-{uuid.uuid4().hex}"
    workers = [RedisCache(url, {"KEY_PREFIX": prefix}) for _ in range(2)]
    yield workers
    for worker in workers:  # Django's RedisCache keeps its pools open for the process
        for pool in worker._cache._pools.values():
            pool.disconnect()
    redis_keys_delete(url, f"{prefix}:*")


@pytest.mark.integration
def test_workers_sharing_redis_share_one_login_budget(two_workers_on_redis, monkeypatch, settings):
    settings.LOGIN_FAILURES_PER_USERNAME = 4
    outcomes = []
    for number in range(6):
        # Each attempt lands on the other worker, as a load balancer would spread them.
        monkeypatch.setattr(login_throttle, "cache", two_workers_on_redis[number % 2])
        try:
            attempt = login_throttle.login_attempt_begin("192.0.2.7", "alice")
        except login_throttle.LoginThrottled as exc:
            outcomes.append(f"throttled {exc.wait}")
        else:
            login_throttle.login_attempt_end(attempt, succeeded=False)
            outcomes.append("checked")

    assert outcomes == ["checked"] * 4 + ["throttled 60"] * 2
