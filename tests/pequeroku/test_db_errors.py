"""Database or Redis unavailable: 503 JSON, never a 500, and the next request works again."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError, connections
from redis.exceptions import ConnectionError as RedisConnectionError

from pequeroku.db_errors import (
    CLOSE_UNAVAILABLE,
    CODE,
    SocketGuard,
    is_unavailable,
    unavailable_response,
)

SECRET = "could not connect to server at 10.0.0.9: password=hunter2-secret"


def database_down() -> Any:
    """Every new cursor fails the way a stopped PostgreSQL makes it fail."""
    return mock.patch.object(
        type(connections["default"]), "ensure_connection", side_effect=OperationalError(SECRET)
    )


@pytest.mark.django_db
def test_api_answers_503_json_while_the_database_is_down_then_recovers(api_client) -> None:
    with database_down():
        response = api_client.get("/api/containers/")

    assert response.status_code == 503
    assert response.json()["code"] == CODE
    assert response["Retry-After"] == "5"
    body = response.content.decode()
    assert "hunter2" not in body and "10.0.0.9" not in body

    assert api_client.get("/api/containers/").status_code == 200


@pytest.mark.django_db
def test_a_view_outside_drf_answers_503_json_too(client, user) -> None:
    client.force_login(user)
    with database_down():
        response = client.get("/admin/")  # the session lookup for request.user fails

    assert response.status_code == 503
    assert response.json()["code"] == CODE
    assert client.get("/admin/").status_code == 302  # to the login page: the database is back


@pytest.mark.django_db
def test_redis_down_under_the_throttle_is_a_503(api_client) -> None:
    # The throttle counters live in Redis in production: its cache call is the first to fail.
    with mock.patch(
        "django.core.cache.backends.locmem.LocMemCache.get",
        side_effect=RedisConnectionError("Error 111 connecting to 127.0.0.1:6379"),
    ):
        response = api_client.get("/api/user/me/")

    assert response.status_code == 503
    assert response.json()["code"] == CODE
    assert "6379" not in response.content.decode()
    assert api_client.get("/api/user/me/").status_code == 200


def test_which_errors_mean_unavailable() -> None:
    assert is_unavailable(OperationalError("x"))
    assert is_unavailable(RedisConnectionError("x"))
    assert not is_unavailable(ValueError("x"))
    assert unavailable_response(ValueError("x")) is None
    assert unavailable_response(RedisConnectionError("x")).status_code == 503


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def never() -> dict[str, Any]:  # pragma: no cover - the apps below never receive
    raise AssertionError


async def test_socket_guard_accepts_and_closes_4503_when_the_lookup_before_the_consumer_fails():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise OperationalError(SECRET)  # the session/user lookup of AuthMiddleware

    sent = Sent()
    await SocketGuard(app)({"type": "websocket"}, never, sent)

    assert sent.messages == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": CLOSE_UNAVAILABLE},
    ]


async def test_socket_guard_only_closes_a_socket_already_accepted():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        raise RedisConnectionError("channel layer gone")

    sent = Sent()
    await SocketGuard(app)({"type": "websocket"}, never, sent)

    assert sent.messages == [
        {"type": "websocket.accept"},
        {"type": "websocket.close", "code": CLOSE_UNAVAILABLE},
    ]


async def test_socket_guard_leaves_other_errors_alone():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await SocketGuard(app)({"type": "websocket"}, never, Sent())
