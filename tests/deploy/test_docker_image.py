"""The image itself, where a Docker daemon and the base image are available (opt-in).

    PEQUEROKU_TEST_DOCKER=1 [PEQUEROKU_TEST_DOCKER_BASE=python:3.13-slim] \\
    PEQUEROKU_TEST_POSTGRES=1 .venv/bin/pytest tests/deploy/test_docker_image.py -m integration

Builds the web image (host network, so pip reaches the package index), runs it against the
machine's PostgreSQL and Redis: migrations, static files, superuser, Gunicorn as a non-root
user, ``/readyz`` 200, the admin's CSS, the HEALTHCHECK turning healthy, a clean stop; and a
run with no database that exits 1 with one line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.deploy import REDIS_URL, pg_env, wait_for
from tests.support.host import REPO, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not os.environ.get("PEQUEROKU_TEST_DOCKER") or shutil.which("docker") is None,
        reason="set PEQUEROKU_TEST_DOCKER=1 where a Docker daemon and the base image exist",
    ),
]

BASE_IMAGE = os.environ.get("PEQUEROKU_TEST_DOCKER_BASE", "python:3.13-slim")
TAG = "pequeroku-web-service:test"
HTTPS = {"X-Forwarded-Proto": "https", "Host": "localhost"}


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image() -> str:
    build = _docker(
        "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--target", "web", "-t", TAG, str(REPO),
        timeout=1500,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return TAG


def _run_args(database: str, **extra: str) -> list[str]:
    env = {
        **pg_env(database),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "localhost",
        "REDIS_URL": REDIS_URL,
        "WORKERS": "2",
        "SECURE_PROXY_SSL": "true",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(12),
        **extra,
    }
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"pequeroku-test-{secrets.token_hex(4)}"
    yield name
    _docker("rm", "-f", name)


def test_image_serves_readyz_and_admin_css_as_a_non_root_user(
    image: str, fresh_pg_database: str, container_name: str
) -> None:
    port = free_port()
    started = _docker(
        "run", "-d", "--name", container_name, "--network", "host",
        *_run_args(fresh_pg_database, BIND=f"127.0.0.1:{port}"),
        "--health-interval", "2s", "--health-start-period", "5s",
        image,
        timeout=300,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    base = f"http://127.0.0.1:{port}"
    logs = lambda: _docker("logs", container_name).stdout[-3000:]  # noqa: E731

    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 300,
             describe=logs)  # fmt: skip
    login = httpx.get(f"{base}/admin/login/", headers=HTTPS, timeout=10)
    css_path = re.findall(r'<link rel="stylesheet" href="([^"]+\.css)"', login.text)[0]
    css = httpx.get(f"{base}{css_path}", headers=HTTPS, timeout=10)
    user = _docker("exec", container_name, "id", "-u").stdout.strip()
    deadline = time.monotonic() + 60
    health = ""
    while time.monotonic() < deadline and health != "healthy":
        health = json.loads(_docker("inspect", container_name).stdout)[0]["State"]["Health"]
        health = health["Status"]
        time.sleep(1)
    stopped = _docker("stop", "-t", "30", container_name, timeout=90)
    state = json.loads(_docker("inspect", container_name).stdout)[0]["State"]

    assert login.status_code == 200
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert user == "10001"
    assert health == "healthy"
    assert stopped.returncode == 0
    assert state["ExitCode"] == 0, logs()


def test_image_exits_1_with_one_line_when_the_database_never_answers(
    image: str, container_name: str
) -> None:
    result = _docker(
        "run", "--name", container_name, "--network", "host",
        *_run_args("pequeroku", DB_PORT=str(free_port()), DB_WAIT_SECONDS="2",
                   DB_WAIT_INTERVAL="0.5"),
        image,
        timeout=120,
    )  # fmt: skip

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("entrypoint: postgresql database 'pequeroku' at 127.0.0.1:")
    assert "did not answer" in line
