"""Deferred audit rows (``user.info``): spooled in the request, inserted in batches, exactly once
even when the process that recorded them is killed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError, connection
from django.test import Client, override_settings

from internal_config.audit_batch import AUDIT_WRITER, audit_flush, spool_ingest
from internal_config.models import AuditLog, AuditSpoolSegment
from pequeroku.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def spool(tmp_path):
    directory = tmp_path / "spool"
    with override_settings(AUDIT_SPOOL_DIR=directory):
        yield directory
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


def test_a_spool_that_cannot_be_written_leaves_the_row_in_the_request(client, spool) -> None:
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text("a file where the folder should be")

    with override_settings(AUDIT_DEFER_SECONDS=60):
        assert client.get("/api/user/me/").status_code == 200

    assert AuditLog.objects.filter(action="user.info").count() == 1
    spool.unlink()


def test_actions_are_still_written_in_the_request(client) -> None:
    with override_settings(AUDIT_DEFER_SECONDS=60):
        client.post("/api/user/logout/")

    assert AuditLog.objects.filter(action="logout").exists()


def test_rows_of_a_killed_process_arrive_exactly_once(user, spool) -> None:
    recorder = start_recorder(spool, user.pk, rows=3)
    try:
        assert audit_flush() == 0, "a live process's segment was taken from it"
    finally:
        kill(recorder)

    assert audit_flush() == 3
    assert audit_flush() == 0
    rows = AuditLog.objects.filter(action="user.info")
    assert sorted(rows.values_list("message", flat=True)) == ["0", "1", "2"]
    assert {row.user for row in rows} == {user}
    assert list(spool.iterdir()) == []


def test_a_crash_between_the_insert_and_the_removal_inserts_nothing_twice(user, spool) -> None:
    recorder = start_recorder(spool, user.pk, rows=2)
    kill(recorder)
    (segment,) = spool.iterdir()
    kept = Path(shutil.copy(segment, spool.parent / "kept"))
    name = segment.name

    assert spool_ingest(spool) == 2
    # What the crash leaves: the rows and the segment's name committed, the file still there.
    AuditSpoolSegment.objects.create(name=name, rows=2)
    kept.rename(spool / name)

    assert spool_ingest(spool) == 0
    assert AuditLog.objects.filter(action="user.info").count() == 2
    assert list(spool.iterdir()) == []
    assert not AuditSpoolSegment.objects.exists()


def test_a_segment_the_database_refuses_stays_for_the_next_flush(user, spool) -> None:
    recorder = start_recorder(spool, user.pk, rows=1)
    kill(recorder)
    table = AuditLog._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        assert spool_ingest(spool) == 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")

    assert len(list(spool.iterdir())) == 1
    assert not AuditSpoolSegment.objects.exists()
    assert spool_ingest(spool) == 1


def test_a_user_deleted_before_the_flush_leaves_the_row_without_its_user(user, spool) -> None:
    recorder = start_recorder(spool, user.pk, rows=1)
    kill(recorder)
    user.delete()

    assert audit_flush() == 1
    assert AuditLog.objects.get(action="user.info").user is None


async def test_the_servers_graceful_shutdown_writes_what_is_buffered(client, user) -> None:
    with override_settings(AUDIT_DEFER_SECONDS=60):
        await sync_to_async(client.get)("/api/user/me/")
    sent = await run_lifespan()

    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert await AuditLog.objects.filter(action="user.info", user=user).acount() == 1


async def test_the_servers_start_ingests_what_a_killed_process_left(user, spool) -> None:
    recorder = start_recorder(spool, user.pk, rows=2)
    kill(recorder)

    await run_lifespan(shutdown=False)

    assert await AuditLog.objects.filter(action="user.info", user=user).acount() == 2


async def run_lifespan(*, shutdown: bool = True) -> list[dict]:
    sent: list[dict] = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    incoming = iter(messages if shutdown else messages[:1])

    async def receive() -> dict:
        try:
            return next(incoming)
        except StopIteration:
            raise EOFError from None

    async def send(message: dict) -> None:
        sent.append(message)

    with contextlib.suppress(EOFError):
        await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


RECORDER = """
import os, sys, time
import django
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from internal_config.audit_batch import audit_defer

settings.AUDIT_DEFER_SECONDS = 3600  # no flush of its own: only the spool has the rows
user = get_user_model()(pk=int(sys.argv[1]))
for number in range(int(sys.argv[2])):
    audit_defer({"user": user, "action": "user.info", "target_type": "user",
                 "target_id": str(user.pk), "message": str(number), "metadata": {},
                 "ip": "10.0.0.7", "user_agent": "poller", "success": True})
print("recorded", flush=True)
time.sleep(60)
"""


def start_recorder(spool: Path, user_id: int, *, rows: int) -> subprocess.Popen[str]:
    """A process that records ``rows`` deferred rows into ``spool`` and then waits to be killed."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pequeroku.settings_test",
        "AUDIT_SPOOL_DIR": str(spool),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(RECORDER), str(user_id), str(rows)],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "recorded"
    return process


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.stdout is not None
    process.stdout.close()
