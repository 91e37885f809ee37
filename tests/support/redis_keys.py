"""The test Redis of the integration pass (``PEQUEROKU_TEST_REDIS``): its URL, keys removed."""

from __future__ import annotations

import os

import pytest
import redis


def integration_redis_url() -> str:
    """The test Redis's URL; skips the test where none is given."""
    url = os.environ.get("PEQUEROKU_TEST_REDIS")
    if not url:
        pytest.skip("needs PEQUEROKU_TEST_REDIS (the integration pass of scripts/test.sh sets it)")
    return url


def redis_keys_delete(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(pattern):
            client.delete(key)
    finally:
        client.close()
