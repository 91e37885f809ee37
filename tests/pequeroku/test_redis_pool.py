"""The cache's Redis connections outlive a request (``pequeroku.redis_pool``).

Django builds a cache object per context, and the ASGI handler gives every request a context
of its own: without the shared pool each request opened a new connection to Redis.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections
from redis.connection import Connection

from pequeroku.http_handler import ThreadedASGIHandler
from pequeroku.settings import redis_cache
from tests.asgi_http import asgi_request
from tests.support.redis_keys import integration_redis_url, redis_keys_delete

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JSON = (b"content-type", b"application/json")


@pytest.fixture
def redis_cache_settings(settings) -> Iterator[str]:
    """The production cache settings on the test Redis, under a prefix of this test."""
    url = integration_redis_url()
    prefix = f"pequeroku-test-pool-{uuid.uuid4().hex}"
    settings.CACHES = {"default": redis_cache(url, prefix)}
    yield prefix
    redis_keys_delete(url, f"{prefix}:*")


async def test_requests_reuse_the_caches_redis_connections(
    redis_cache_settings, make_user, password
) -> None:
    await database_sync_to_async(make_user)("pooled")
    handler = ThreadedASGIHandler(threads=1)
    body = json.dumps({"username": "pooled", "password": password}).encode()
    try:
        # Connection._connect opens a socket; connect() runs before every command and returns
        # at once when the connection is open.
        with mock.patch.object(
            Connection, "_connect", autospec=True, side_effect=Connection._connect
        ) as connects:
            for _ in range(6):
                # Each login asks the cache (the login throttle), each in a request context
                # of its own.
                response = await asgi_request(
                    handler, "POST", "/api/user/login/", body=body, headers=[JSON]
                )
                assert response.status == 200, response.body
    finally:
        # The handler's thread keeps its database connection; the test database is dropped.
        await sync_to_async(
            connections.close_all, thread_sensitive=False, executor=handler.executor
        )()
        handler.executor.shutdown()

    assert connects.call_count == 1
