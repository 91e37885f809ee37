"""A socket checks the Origin itself: mounted without ``AllowedHostsOriginValidator`` (as the
AI routes are in tests, or by a future router), a cross-site page still cannot open it."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from pequeroku.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.mark.parametrize("path", ["/ws/containers/{pk}/", "/ws/fs/{pk}/", "/ws/ai/{pk}/"])
async def test_a_cross_site_page_cannot_open_a_socket_even_without_the_validator(
    path, user, running_container
):
    comm = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns),
        path.format(pk=running_container.pk),
        headers=[(b"origin", b"https://evil.example"), (b"host", b"localhost")],
    )
    comm.scope["user"] = user
    await comm.connect(timeout=10)

    closed = await comm.receive_output(timeout=10)

    assert closed == {"type": "websocket.close", "code": 4403}
