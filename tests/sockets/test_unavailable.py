"""A socket whose access check finds the database down: an error event, then close 4503."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError

from pequeroku.db_errors import CLOSE_UNAVAILABLE, MESSAGE
from tests.support.sockets import TIMEOUT, communicator, next_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_editor_gets_an_error_event_and_4503_when_the_database_is_down(
    running_container, alice_cookie
):
    comm = communicator(f"/ws/fs/{running_container.pk}/", alice_cookie)
    with mock.patch(
        "vm_manager.ide.base._grant_for", side_effect=OperationalError("password=hunter2")
    ):
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        event = await next_event(comm)
        closed = await comm.receive_output(timeout=TIMEOUT)

    assert event["event"] == "error"
    assert MESSAGE in str(event)
    assert "hunter2" not in str(event)
    assert closed == {"type": "websocket.close", "code": CLOSE_UNAVAILABLE}


async def test_console_connects_again_once_the_database_is_back(
    running_container, alice_cookie, open_socket
):
    comm = communicator(f"/ws/containers/{running_container.pk}/", alice_cookie)
    with mock.patch("vm_manager.ide.base._grant_for", side_effect=OperationalError("down")):
        await comm.connect(timeout=TIMEOUT)
        event = await next_event(comm)
        closed = await comm.receive_output(timeout=TIMEOUT)
    assert event["type"] == "error"
    assert closed["code"] == CLOSE_UNAVAILABLE

    again = await open_socket(f"/ws/containers/{running_container.pk}/", alice_cookie)
    assert (await next_event(again))["type"] == "info"
