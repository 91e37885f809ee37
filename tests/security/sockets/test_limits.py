"""M7 and L7: a user cannot hold unbounded sockets or terminals, one console cannot flood the
audit trail, and a stale tab reconnecting forever writes one refusal row a minute."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from internal_config.models import AuditLog
from tests.support.sockets import communicator, event_where, next_event
from vm_manager.ide.limits import socket_slots, terminal_slots

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def refused(path: str, cookie: str) -> tuple[list[dict], int]:
    """The events a socket gets before its close, and the close code."""
    comm = communicator(path, cookie)
    await comm.connect(timeout=10)
    events: list[dict] = []
    while True:
        message = await comm.receive_output(timeout=10)
        if message["type"] == "websocket.close":
            return events, message["code"]
        events.append(message)


async def not_output(console) -> dict:
    return await event_where(console, lambda e: e.get("type") != "stream")


async def test_a_socket_beyond_the_users_cap_gets_a_refusal_event_and_4429(
    running_container, alice_cookie, open_socket, settings
):
    settings.SOCKETS_MAX_PER_USER = 2
    await open_socket(f"/ws/fs/{running_container.pk}/", alice_cookie)
    await open_socket(f"/ws/containers/{running_container.pk}/", alice_cookie)

    events, code = await refused(f"/ws/ai/{running_container.pk}/", alice_cookie)

    assert code == 4429
    assert "Too many open sockets" in events[0]["text"]


async def test_a_closed_socket_gives_its_slot_back(
    running_container, user, alice_cookie, open_socket, settings
):
    settings.SOCKETS_MAX_PER_USER = 1
    first = await open_socket(f"/ws/fs/{running_container.pk}/", alice_cookie)
    assert await next_event(first) == {"event": "connected"}
    await first.disconnect()

    second = await open_socket(f"/ws/fs/{running_container.pk}/", alice_cookie)
    assert await next_event(second) == {"event": "connected"}
    await second.disconnect()
    assert socket_slots.held(user.pk) == 0


async def test_terminals_beyond_the_users_cap_are_refused(
    running_container, user, alice_cookie, open_socket, settings
):
    settings.TERMINALS_MAX_PER_USER = 2
    console = await open_socket(f"/ws/containers/{running_container.pk}/", alice_cookie)
    assert (await next_event(console))["sessions"] == ["s1"]
    await console.send_json_to({"control": "open", "sid": "s2"})
    assert (await not_output(console))["message"] == "session-opened"

    await console.send_json_to({"control": "open", "sid": "s3"})
    error = await not_output(console)
    assert error["type"] == "error" and "Too many open terminals" in error["message"]

    events, code = await refused(f"/ws/containers/{running_container.pk}/?sid=raw1", alice_cookie)
    assert code == 4429
    assert "Too many open terminals" in events[0]["text"]

    await console.send_json_to({"control": "close", "sid": "s2"})
    assert (await not_output(console))["message"] == "session-closed"
    await console.send_json_to({"control": "open", "sid": "s3"})
    assert (await not_output(console))["message"] == "session-opened"
    await console.disconnect()
    assert terminal_slots.held(user.pk) == 0


async def test_a_stale_tab_reconnecting_every_half_second_writes_one_refusal_row(
    running_container, bob_cookie
):
    for _ in range(6):
        _, code = await refused(f"/ws/fs/{running_container.pk}/", bob_cookie)
        assert code == 4403
        await asyncio.sleep(0.05)

    rows = await database_sync_to_async(
        lambda: AuditLog.objects.filter(action="ws.connect", success=False).count()
    )()
    assert rows == 1


async def test_one_console_writes_at_most_a_few_audit_rows_a_second(
    running_container, alice_cookie, open_socket
):
    console = await open_socket(f"/ws/containers/{running_container.pk}/", alice_cookie)
    await next_event(console)
    started = time.monotonic()
    for n in range(100):
        await console.send_to(text_data=f"true {n}")
    await asyncio.sleep(1.2)
    await console.disconnect()
    elapsed = time.monotonic() - started

    def command_rows() -> list[dict]:
        return list(
            AuditLog.objects.filter(action__in=("ws.cmd", "ws.ctrlc", "ws.ctrld"))
            .order_by("id")
            .values_list("metadata", flat=True)
        )

    rows = await database_sync_to_async(command_rows)()
    assert len(rows) <= 2 + elapsed  # one now, then at most one a second, one at disconnect
    assert sum(row.get("batched", 1) for row in rows) == 100
