"""Audit rows of polled reads, inserted in batches off the request path.

Entry points: ``audit_defer(fields)`` (called by ``internal_config.audit`` for ``deferred``
rows), ``audit_flush()`` (the web server's shutdown and tests), ``AUDIT_WRITER``.

Why: ``/api/user/me/`` is polled every 2 s per open tab and audits every call (``user.info``);
its own transaction (BEGIN, INSERT, COMMIT with its flush to disk) cost more than the rest of
the request. Such rows now go to an in-process buffer that one background thread inserts every
``AUDIT_DEFER_SECONDS`` in a single transaction, keeping each row's own time; the buffer is
flushed at shutdown (ASGI lifespan and ``atexit``) and a failed insert keeps the rows for the
next round. What is lost is what a killed process (``kill -9``) had not yet flushed: at most
``AUDIT_DEFER_SECONDS`` of these read rows, never a row of an action (those are written in the
request, as before). ``AUDIT_DEFER_SECONDS = 0`` writes them in the request too.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from internal_config.models import AuditLog

logger = logging.getLogger(__name__)

# Rows kept while the database refuses them; beyond this the oldest are dropped (and logged).
MAX_BUFFERED_ROWS = 50_000
MIN_INTERVAL_SECONDS = 0.05


class DeferredAuditWriter:
    def __init__(self) -> None:
        self._rows: list[AuditLog] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, fields: dict[str, Any]) -> None:
        row = AuditLog(created_at=timezone.now(), **fields)
        with self._lock:
            self._rows.append(row)
            if len(self._rows) > MAX_BUFFERED_ROWS:
                dropped = len(self._rows) - MAX_BUFFERED_ROWS
                del self._rows[:dropped]
                logger.error("audit buffer full: dropped %s deferred rows", dropped)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Insert every buffered row now (in this thread); returns how many were written.

        Also wakes the writer thread, which ends if nothing came in meanwhile.
        """
        self._wake.set()
        return self._flush()

    def _flush(self) -> int:
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                with transaction.atomic():
                    for row in rows:
                        # raw: keep the time of the call, not of the flush (auto_now_add).
                        row.save_base(raw=True, force_insert=True)
            except Exception:
                logger.exception("could not write %s deferred audit rows; retrying", len(rows))
                with self._lock:
                    self._rows[:0] = rows
                return 0
            return len(rows)

    def _run(self) -> None:
        """Flush every interval while rows keep coming; end when a round found none (the next
        ``add`` starts a new thread)."""
        while True:
            self._wake.wait(max(settings.AUDIT_DEFER_SECONDS, MIN_INTERVAL_SECONDS))
            self._wake.clear()
            try:
                self._flush()
            except Exception:  # flush logs its own failures; the thread must not die of one
                logger.exception("deferred audit flush failed")
            finally:
                # Kept as long as CONN_MAX_AGE allows, like a request thread's connection.
                close_old_connections()
            with self._lock:
                if not self._rows:
                    self._thread = None
                    connections.close_all()
                    return


AUDIT_WRITER = DeferredAuditWriter()


def audit_defer(fields: dict[str, Any]) -> None:
    AUDIT_WRITER.add(fields)


def audit_flush() -> int:
    return AUDIT_WRITER.flush()


@atexit.register
def _flush_at_exit() -> None:
    try:
        AUDIT_WRITER.flush()
    except Exception:  # the interpreter is going away: say so, never raise
        logger.exception("could not flush deferred audit rows at exit")
