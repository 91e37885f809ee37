"""pequeroku.http_handler: plain HTTP through the ASGI application, one thread call a request.

Spoken to as a server would (raw ASGI), since Django's test clients bypass the project's
handler.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import signals

from pequeroku.asgi import application
from tests.asgi_http import asgi_request
from tests.support.fixtures.streams import own_container_type, running

# Fixtures defined in tests.support, registered here by name.
__all__ = ["own_container_type", "running"]

pytestmark = pytest.mark.django_db(transaction=True)

JSON = (b"content-type", b"application/json")


@pytest.fixture
def request_threads() -> Iterator[list[tuple[str, str]]]:
    """(signal, thread name) of each request_started / request_finished, in order."""
    seen: list[tuple[str, str]] = []

    def started(**kwargs: Any) -> None:
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs: Any) -> None:
        seen.append(("finished", threading.current_thread().name))

    signals.request_started.connect(started, dispatch_uid="test-http-started")
    signals.request_finished.connect(finished, dispatch_uid="test-http-finished")
    yield seen
    signals.request_started.disconnect(dispatch_uid="test-http-started")
    signals.request_finished.disconnect(dispatch_uid="test-http-finished")


async def login(username: str, password: str) -> bytes:
    """The session cookie header value after a JSON login."""
    body = json.dumps({"username": username, "password": password}).encode()
    response = await asgi_request(
        application, "POST", "/api/user/login/", body=body, headers=[JSON]
    )
    assert response.status == 200, response.body
    return b"; ".join(cookie.split(b";")[0] for cookie in response.set_cookies)


async def test_a_request_starts_and_finishes_in_one_reused_pool_thread(request_threads) -> None:
    for _ in range(3):
        response = await asgi_request(application, "GET", "/healthz")
        assert response.status == 200

    assert [signal for signal, _ in request_threads] == ["started", "finished"] * 3
    for started, finished in zip(request_threads[::2], request_threads[1::2], strict=True):
        assert started[1] == finished[1]
        assert started[1].startswith("http")
    assert threading.current_thread().name not in {name for _, name in request_threads}


async def test_concurrent_requests_share_at_most_http_threads_threads(request_threads) -> None:
    responses = await asyncio.gather(
        *(asgi_request(application, "GET", "/healthz") for _ in range(4 * settings.HTTP_THREADS))
    )

    assert {response.status for response in responses} == {200}
    assert len({name for _, name in request_threads}) <= settings.HTTP_THREADS


async def test_async_to_sync_in_request_code_runs_on_the_servers_loop() -> None:
    server_loop = asyncio.get_running_loop()
    loops: list[asyncio.AbstractEventLoop] = []

    async def running_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def started(**kwargs: Any) -> None:
        loops.append(async_to_sync(running_loop)())

    signals.request_started.connect(started, dispatch_uid="test-http-loop")
    try:
        response = await asgi_request(application, "GET", "/readyz")
    finally:
        signals.request_started.disconnect(dispatch_uid="test-http-loop")

    assert response.status == 200, response.body
    assert loops == [server_loop]


async def test_sessions_csrf_and_security_headers_work_as_under_djangos_handler(
    user, password
) -> None:
    cookie = await login(user.username, password)

    me = await asgi_request(application, "GET", "/api/user/me/", headers=[(b"cookie", cookie)])
    refused = await asgi_request(
        application, "POST", "/api/user/logout/", headers=[(b"cookie", cookie)]
    )

    assert me.status == 200 and me.json()["username"] == user.username
    assert me.headers[b"X-Frame-Options"] == b"DENY"
    assert refused.status == 403  # CSRF still enforced


async def test_an_api_path_without_a_route_is_a_json_404() -> None:
    response = await asgi_request(application, "GET", "/api/no-such-thing/")

    assert response.status == 404
    assert response.json()["code"] == "not_found"


async def test_a_download_streams_from_the_node_through_the_server_path(
    user, password, running
) -> None:
    container, root = running
    (root / "big.bin").write_bytes(b"x" * (300 * 1024))
    cookie = await login(user.username, password)

    response = await asgi_request(
        application,
        "GET",
        f"/api/containers/{container.pk}/download_file/",
        query_string=b"path=/app/big.bin",
        headers=[(b"cookie", cookie)],
    )

    assert response.status == 200
    assert response.body == b"x" * (300 * 1024)


async def test_a_client_that_hangs_up_stops_the_stream_and_the_request_finishes(
    user, password, running, request_threads
) -> None:
    container, root = running
    (root / "big.bin").write_bytes(b"x" * (4 * 1024 * 1024))
    cookie = await login(user.username, password)
    request_threads.clear()

    response = await asgi_request(
        application,
        "GET",
        f"/api/containers/{container.pk}/download_file/",
        query_string=b"path=/app/big.bin",
        headers=[(b"cookie", cookie)],
        stop_after_body_bytes=1,
        timeout=10,
    )

    assert response.status == 200
    assert 0 < len(response.body) < 4 * 1024 * 1024
    assert [signal for signal, _ in request_threads] == ["started", "finished"]
