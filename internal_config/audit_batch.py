"""Audit rows of polled reads: a spool file written in the request, inserted in batches.

Entry points: ``audit_defer(fields)`` (called by ``internal_config.audit`` for ``deferred``
rows), ``audit_flush()`` (the writer thread, the web server's shutdown, tests),
``audit_spool_recover()`` (the web server's start: segments left by processes that died),
``AUDIT_WRITER``.

Why: ``/api/user/me/`` is polled every 2 s per open tab and audits every call (``user.info``);
its own transaction (BEGIN, INSERT, COMMIT with its flush to disk) cost more than the rest of
the request. Such a row is now one ``write()`` of a JSON line to this process's spool segment
in ``AUDIT_SPOOL_DIR``: no database and no fsync in the request, and the page cache keeps the
line when the process dies, ``kill -9`` included. A background thread inserts the rows every
``AUDIT_DEFER_SECONDS``, each with the time of its call.

Exactly once: a process appends to one segment at a time and holds an exclusive ``flock`` on
it while it may still write there (the kernel drops the lock when the process dies, however it
dies). A flush closes the process's segment (the next row opens a new one), then ingests every
segment whose lock it can take: its own closed one and any left by a dead process. A
segment's rows and an ``AuditSpoolSegment`` row naming it are inserted in one transaction (the
name is unique), and only then is the file removed: a crash before the commit leaves the file
for the next flush, a crash after it leaves a file whose name is recorded and which is removed
unread. A segment the database refuses (down, restarting) stays on disk for the next round.
Not covered: the machine losing power before the kernel wrote its page cache out. Rows of
actions are written in the request, as before; ``AUDIT_DEFER_SECONDS = 0`` writes polled rows
in the request too.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from internal_config.models import AuditLog, AuditSpoolSegment

logger = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 0.05
SEGMENT_SUFFIX = ".jsonl"
# A segment is created under this prefix and renamed once locked, so no flush can take it
# between its creation and its writer's lock; leftovers older than this are removed.
CREATING_PREFIX = ".creating-"
CREATING_STALE_SECONDS = 60.0


class DeferredAuditWriter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._pid = os.getpid()
        self._pending = 0

    def add(self, fields: dict[str, Any]) -> None:
        line = _encode(fields, timezone.now())
        with self._lock:
            if self._pid != os.getpid():
                self._forget_parent()
            if self._fd is None:
                self._fd = _segment_open(Path(settings.AUDIT_SPOOL_DIR))
            _write_all(self._fd, line)
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return self._pending

    def flush(self) -> int:
        """Insert every spooled row now (in this thread); returns how many were written.

        Also wakes the writer thread, which ends if nothing came in meanwhile.
        """
        self._wake.set()
        return self._flush()

    def _flush(self) -> int:
        with self._flushing:
            with self._lock:
                if self._pid == os.getpid() and self._fd is not None:
                    # Unlocked from here on: it is ingested like a dead process's segment.
                    os.close(self._fd)
                    self._fd = None
                    self._pending = 0
            return spool_ingest(Path(settings.AUDIT_SPOOL_DIR))

    def _forget_parent(self) -> None:
        """In a forked child: the parent's segment and writer thread are the parent's."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._thread, self._pending, self._pid = None, None, 0, os.getpid()

    def _run(self) -> None:
        """Flush every interval while rows keep coming; end when a round found none (the next
        ``add`` starts a new thread)."""
        while True:
            self._wake.wait(max(settings.AUDIT_DEFER_SECONDS, MIN_INTERVAL_SECONDS))
            self._wake.clear()
            try:
                self._flush()
            except Exception:  # the thread must not die of one failed round
                logger.exception("deferred audit flush failed")
            finally:
                # Kept as long as CONN_MAX_AGE allows, like a request thread's connection.
                close_old_connections()
            with self._lock:
                if not self._pending:
                    self._thread = None
                    connections.close_all()
                    return


def spool_ingest(directory: Path) -> int:
    """Insert the rows of every segment in ``directory`` that no live writer holds; returns how
    many rows were inserted. Safe to run in any number of processes at once."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    written = 0
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.endswith(SEGMENT_SUFFIX) and not entry.name.startswith("."):
            written += _segment_ingest(Path(entry.path))
        elif entry.name.startswith(CREATING_PREFIX):
            _creating_leftover_remove(Path(entry.path))
    return written


def _segment_ingest(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its writer is alive, or another flush is ingesting it
        if os.fstat(fd).st_nlink == 0:
            return 0  # ingested and removed while this flush waited for it
        name = path.name
        if AuditSpoolSegment.objects.filter(name=name).exists():
            _segment_remove(path, name)  # a flush died between its commit and the removal
            return 0
        with os.fdopen(os.dup(fd), "rb") as segment:
            rows = _decode(segment.read(), name)
        try:
            with transaction.atomic():
                AuditSpoolSegment.objects.create(name=name, rows=len(rows))
                _insert(rows)
        except Exception:
            logger.exception(
                "could not insert audit spool segment %s; kept for the next flush", name
            )
            return 0
        _segment_remove(path, name)
        return len(rows)
    finally:
        os.close(fd)


def _segment_remove(path: Path, name: str) -> None:
    path.unlink(missing_ok=True)
    # The name only guards against a second ingest while the file exists.
    AuditSpoolSegment.objects.filter(name=name).delete()


def _segment_open(directory: Path) -> int:
    """A new segment of this process, created and locked before any flush can see it."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}-{time.time_ns()}-{secrets.token_hex(4)}{SEGMENT_SUFFIX}"
    creating = directory / f"{CREATING_PREFIX}{name}"
    fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        creating.rename(directory / name)
    except BaseException:
        os.close(fd)
        creating.unlink(missing_ok=True)
        raise
    return fd


def _creating_leftover_remove(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > CREATING_STALE_SECONDS:
            path.unlink(missing_ok=True)  # its process died before writing a row there
    except FileNotFoundError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _encode(fields: dict[str, Any], created_at: Any) -> bytes:
    row = dict(fields)
    user = row.pop("user", None)
    row["user_id"] = None if user is None else user.pk
    row["created_at"] = created_at
    return json.dumps(row, cls=DjangoJSONEncoder, separators=(",", ":")).encode() + b"\n"


def _decode(data: bytes, name: str) -> list[AuditLog]:
    lines = data.split(b"\n")
    if lines[-1]:
        # Its process died in the middle of this write(): the call never returned.
        logger.warning("audit spool segment %s ends in a partial row; skipped", name)
    rows = []
    for line in lines[:-1]:
        try:
            fields = json.loads(line)
            fields["created_at"] = parse_datetime(fields["created_at"])
            rows.append(AuditLog(**fields))
        except (ValueError, TypeError, KeyError):
            logger.exception("unreadable row in audit spool segment %s; skipped", name)
    return rows


def _insert(rows: list[AuditLog]) -> None:
    user_ids = {row.user_id for row in rows if row.user_id is not None}
    if user_ids:
        # A user deleted since the call: the row stays, without its user (SET_NULL).
        found = set(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True))
        for row in rows:
            if row.user_id not in found:
                row.user_id = None
    for row in rows:
        # raw: keep the time of the call, not of the flush (auto_now_add).
        row.save_base(raw=True, force_insert=True)


AUDIT_WRITER = DeferredAuditWriter()


def audit_defer(fields: dict[str, Any]) -> None:
    AUDIT_WRITER.add(fields)


def audit_flush() -> int:
    return AUDIT_WRITER.flush()


def audit_spool_recover() -> int:
    """Ingest what dead processes left in the spool (at a web worker's start); never raises."""
    try:
        return spool_ingest(Path(settings.AUDIT_SPOOL_DIR))
    except Exception:
        logger.exception("could not ingest the audit spool")
        return 0


@atexit.register
def _flush_at_exit() -> None:
    try:
        AUDIT_WRITER.flush()
    except Exception:  # the interpreter is going away: say so, never raise
        logger.exception("could not flush deferred audit rows at exit")
