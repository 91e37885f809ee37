"""Django's PostgreSQL backend whose connection pool checks connections with
``pequeroku.db_pool.idle_connection_check`` (``ENGINE = "pequeroku.postgresql"``).

Django builds the psycopg pool itself and passes it only psycopg_pool's round-trip check (with
``CONN_HEALTH_CHECKS``); a ``check`` in the pool options would be passed twice. So the pool
Django built gets this check in place of its own. Should psycopg_pool keep its check under
another name one day, the round-trip check stays in force (``CONN_HEALTH_CHECKS`` is on) and
``tests/pequeroku/test_db_pool_check.py`` fails.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base

from pequeroku.db_pool import idle_connection_check


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        pool = super().pool
        if pool is not None and getattr(pool, "_check", None) is not idle_connection_check:
            pool._check = idle_connection_check
        return pool
