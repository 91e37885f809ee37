"""Deferred audit rows (``user.info``): batched off the request path, never lost on shutdown."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from django.test import Client, override_settings

from internal_config.audit_batch import AUDIT_WRITER, audit_flush
from internal_config.models import AuditLog
from pequeroku.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def empty_buffer():
    yield
    audit_flush()


@override_settings(AUDIT_DEFER_SECONDS=60)
def test_a_polled_read_leaves_the_request_and_lands_at_the_flush_with_its_own_time(
    client, user
) -> None:
    client.get("/api/user/me/", HTTP_USER_AGENT="poller", REMOTE_ADDR="10.0.0.7")

    assert not AuditLog.objects.filter(action="user.info").exists()
    time.sleep(0.01)
    flushed_after = time.time()
    assert audit_flush() == 1

    row = AuditLog.objects.get(action="user.info")
    assert (row.user, row.target_type, row.target_id) == (user, "user", str(user.pk))
    assert (row.ip, row.user_agent, row.success) == ("10.0.0.7", "poller", True)
    assert row.created_at.timestamp() < flushed_after


@override_settings(AUDIT_DEFER_SECONDS=0.05)
def test_the_background_writer_inserts_the_rows_within_the_interval(client) -> None:
    for _ in range(3):
        client.get("/api/user/me/")

    deadline = time.monotonic() + 10
    while landed_rows() < 3:
        assert time.monotonic() < deadline, "the deferred rows never landed"
        time.sleep(0.02)
    assert AUDIT_WRITER.pending() == 0


def landed_rows() -> int:
    # The test database is SQLite in memory with a shared cache: a read while the writer
    # thread's insert holds the table fails at once ("table is locked") instead of waiting.
    try:
        return AuditLog.objects.filter(action="user.info").count()
    except OperationalError:
        return 0


def test_actions_are_still_written_in_the_request(client) -> None:
    with override_settings(AUDIT_DEFER_SECONDS=60):
        client.post("/api/user/logout/")

    assert AuditLog.objects.filter(action="logout").exists()


async def test_the_servers_graceful_shutdown_writes_what_is_buffered(client, user) -> None:
    with override_settings(AUDIT_DEFER_SECONDS=60):
        await sync_to_async(client.get)("/api/user/me/")
    sent: list[dict] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict:
        return next(incoming)

    async def send(message: dict) -> None:
        sent.append(message)

    await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert await AuditLog.objects.filter(action="user.info", user=user).acount() == 1
