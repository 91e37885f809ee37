"""A password in REDIS_URL reaches every Redis client: channel layer, cache, revisions, /readyz.

Marker ``integration``: starts a private ``redis-server`` with ``requirepass`` on a free
loopback port (the machine's shared Redis has no password), then runs the real settings in a
fresh interpreter against it, once with the right password and once with a wrong one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-redis-password"
PROBE = """
import asyncio, json, django
django.setup()
from channels.layers import get_channel_layer
from django.core.cache import cache
from pequeroku.health import check_channel_layer
from vm_manager.guest.revisions import revision_store

def cache_roundtrip():
    cache.set("password-probe", 41)
    assert cache.incr("password-probe") == 42

async def bump():
    assert await revision_store(get_channel_layer()).bump(1, "/app/probe.txt") >= 1

results = {}
for name, check in (
    ("channel_layer", check_channel_layer),
    ("cache", cache_roundtrip),
    ("revisions", lambda: asyncio.run(bump())),
):
    try:
        check()
        results[name] = "ok"
    except Exception as exc:
        results[name] = type(exc).__name__
print(json.dumps(results))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--requirepass", PASSWORD,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def probe(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DB_NAME", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="pequeroku.settings", DEBUG="true", REDIS_URL=url)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_password_in_redis_url_is_used_by_every_redis_client(redis_with_password):
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password}/0"

    assert probe(url) == {"channel_layer": "ok", "cache": "ok", "revisions": "ok"}


def test_a_wrong_redis_password_is_refused_by_every_redis_client(redis_with_password):
    url = f"redis://:wrong@127.0.0.1:{redis_with_password}/0"

    results = probe(url)

    assert "ok" not in results.values(), results
