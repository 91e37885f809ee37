"""SQLite for ``make run``: several processes (web server, reconcile loop) write one file.

Settings pick this engine for SQLite with ``transaction_mode: IMMEDIATE`` and WAL (see
settings.py). It adds one thing Django's backend cannot express as an option: the database
file is created owner-only (0600) before SQLite creates it with the process umask, because it
holds password hashes and session keys. SQLite gives the ``-wal`` and ``-shm`` files the
database file's mode.
"""

from __future__ import annotations

import os
from typing import Any

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        create_private_file(str(conn_params["database"]))
        return super().get_new_connection(conn_params)


def create_private_file(name: str) -> None:
    """Create ``name`` empty with mode 0600 if it does not exist (an in-memory or URI name is
    left to SQLite)."""
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
