"""Issue 16: a client leaving is a normal end (debug, never ERROR with a traceback), and the
editor's first answers are not held back by the default template."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from channels.db import database_sync_to_async
from uvicorn.protocols.utils import ClientDisconnected

from internal_config.models import AuditLog
from tests.support.sockets import communicator, event_where, next_event
from vm_manager.ide import editor as editor_socket
from vm_manager.ide.editor import EditorConsumer

from .test_editor import template_applied

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_normal_disconnect_is_logged_at_debug(running_container, alice_cookie, caplog):
    caplog.set_level(logging.DEBUG, logger="vm_manager.ide.base")
    comm = communicator(f"/ws/containers/{running_container.pk}/", alice_cookie)
    await comm.connect(timeout=10)
    await next_event(comm)

    await comm.disconnect(code=1001)

    assert "console socket closed (code 1001)" in caplog.text
    assert errors(caplog) == []


async def test_a_client_leaving_while_its_answer_is_sent_is_not_an_error(
    running_container, alice_cookie, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG, logger="vm_manager.ide.base")
    comm = communicator(f"/ws/fs/{running_container.pk}/", alice_cookie)
    await comm.connect(timeout=10)
    assert await next_event(comm) == {"event": "connected"}
    original = EditorConsumer.send

    async def gone(self, text_data=None, bytes_data=None, close=False):
        if text_data and '"req_id": 5' in text_data:
            raise ClientDisconnected()
        await original(self, text_data, bytes_data, close)

    monkeypatch.setattr(EditorConsumer, "send", gone)

    await comm.send_json_to({"action": "list_dirs", "req_id": 5, "path": "/app"})
    await asyncio.sleep(0.3)
    with contextlib.suppress(Exception):
        await comm.disconnect()

    assert "the client left before its answer was sent" in caplog.text
    assert errors(caplog) == []


async def test_the_editors_first_answers_do_not_wait_for_the_default_template(
    running_container, workspace, alice_cookie, open_socket, monkeypatch
):
    original = editor_socket.workspace_initialize_once

    async def slow_template(container):
        await asyncio.sleep(3)
        return await original(container)

    monkeypatch.setattr(editor_socket, "workspace_initialize_once", slow_template)
    started = time.monotonic()
    comm = await open_socket(f"/ws/fs/{running_container.pk}/", alice_cookie)
    assert await next_event(comm) == {"event": "connected"}
    await comm.send_json_to({"action": "list_dirs", "req_id": 1, "path": "/app"})
    reply = await event_where(comm, lambda e: e.get("req_id") == 1)

    assert reply["event"] == "ok"
    assert time.monotonic() - started < 1.5
    await template_applied(running_container, timeout=10)
    assert "Welcome" in (workspace / "README.md").read_text()


async def test_the_template_is_still_applied_once_when_editors_race(
    running_container, alice_cookie, open_socket
):
    editors = [await open_socket(f"/ws/fs/{running_container.pk}/", alice_cookie) for _ in range(4)]
    for comm in editors:
        assert await next_event(comm) == {"event": "connected"}
    await template_applied(running_container)
    await asyncio.sleep(0.3)

    applied = await database_sync_to_async(
        AuditLog.objects.filter(action="template.apply", target_id=str(running_container.pk)).count
    )()
    assert applied == 1
