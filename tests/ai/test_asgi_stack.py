"""The AI socket through the project's ASGI application: session cookie and Origin check."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from pequeroku.asgi import application
from tests.support.ai import receive_close_code, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


def socket_for(
    pk: int, cookie: str | None, origin: bytes = b"http://localhost"
) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, f"/ws/ai/{pk}/", headers=headers)


@pytest.fixture
def alice_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def test_a_logged_in_session_gets_the_greeting(ai_config, running_container, alice_cookie):
    socket = socket_for(running_container.pk, alice_cookie)
    connected, _ = await socket.connect()
    assert connected
    assert await receive_until(socket, "connected") == [
        {"event": "connected", "ai_uses_left_today": 5}
    ]
    await socket.disconnect()


async def test_no_session_closes_4401(ai_config, running_container):
    socket = socket_for(running_container.pk, None)
    connected, _ = await socket.connect()
    assert connected
    assert await receive_close_code(socket) == 4401


async def test_a_foreign_origin_is_refused(ai_config, running_container, alice_cookie):
    socket = socket_for(running_container.pk, alice_cookie, origin=b"https://evil.example")
    connected, _ = await socket.connect()
    assert not connected


def test_the_consumer_answers_to_the_name_the_spec_gives_it():
    from ai_services.ai_consumers import AIConsumer as spec_name
    from ai_services.consumers import AIConsumer

    assert spec_name is AIConsumer
