"""Pooled PostgreSQL connections are checked without a round trip (``pequeroku.db_pool``,
``pequeroku.postgresql``), and one PostgreSQL closed is still never handed to a request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from pequeroku.db_pool import idle_connection_check
from pequeroku.postgresql.base import DatabaseWrapper

pytestmark = pytest.mark.integration


@pytest.fixture
def pooled() -> Iterator[Any]:
    """The project's engine with a pool of one connection, on the test server."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (the integration pass of scripts/test.sh)")
    settings_dict = {
        **connection.settings_dict,
        "NAME": "postgres",
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"pool": {"min_size": 1, "max_size": 1, "timeout": 5}},
    }
    wrapper = DatabaseWrapper(settings_dict, alias=f"pool-{uuid.uuid4().hex}")
    wrapper.pool.open(wait=True)
    yield wrapper.pool
    wrapper.close_pool()


def backend_pid(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return conn.info.backend_pid


def test_the_engines_pool_uses_the_check_without_a_round_trip(pooled) -> None:
    assert pooled._check is idle_connection_check


def test_a_healthy_pooled_connection_is_handed_out_without_a_round_trip(pooled) -> None:
    first = backend_pid(pooled)
    with mock.patch.object(
        ConnectionPool, "check_connection", wraps=ConnectionPool.check_connection
    ) as round_trips:
        again = backend_pid(pooled)

    assert again == first
    assert round_trips.call_count == 0


def test_a_connection_postgresql_terminated_while_pooled_is_replaced(pooled) -> None:
    first = backend_pid(pooled)
    with psycopg.connect(**pooled.kwargs) as admin:
        # With a timeout it returns once the backend has gone, not when it was signalled.
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [first])

    with pooled.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.backend_pid != first


def test_a_closed_connection_fails_the_check() -> None:
    closed = mock.Mock(spec=psycopg.Connection, closed=True)

    with pytest.raises(psycopg.OperationalError):
        idle_connection_check(closed)
