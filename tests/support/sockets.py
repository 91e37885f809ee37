"""Websocket helpers for the IDE sockets: communicators on the real ASGI application, session
cookies, an in-memory VM to talk to, and read helpers with timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from pequeroku.asgi import application
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, Node

ORIGIN = b"http://localhost"
TIMEOUT = 10.0


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def start_vm(node: Node, container: Container) -> Path:
    """Create and start the container's VM on the in-memory node; returns its /app on disk."""
    driver = InMemoryNodeDriver(node.name)
    spec = {"vm_id": container.vm_id, "vcpus": 1, "memory_mb": 512, "disk_gib": 1, "image": "x"}
    async_to_sync(driver.vm_create)(spec)  # type: ignore[arg-type]
    async_to_sync(driver.vm_start)(container.vm_id)
    return InMemoryNodeDriver.node_state(node.name).vms[container.vm_id].workspace


def communicator(path: str, cookie: str | None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def close_code(path: str, cookie: str | None) -> int:
    """The code a socket at ``path`` is closed with right after its handshake."""
    comm = communicator(path, cookie)
    await comm.connect()
    message = await comm.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def next_event(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> dict[str, Any]:
    return await comm.receive_json_from(timeout=timeout)


async def stream_until(
    comm: WebsocketCommunicator,
    needle: str,
    *,
    sid: str | None = None,
    timeout: float = TIMEOUT,
    others: list[dict[str, Any]] | None = None,
) -> str:
    """Collect ``stream`` payloads (of ``sid`` if given) until ``needle`` shows up."""
    deadline = time.monotonic() + timeout
    seen = ""
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen in {seen[-500:]!r}")
        try:
            event = await comm.receive_json_from(timeout=left)
        except TimeoutError:
            raise AssertionError(f"{needle!r} not seen in {seen[-500:]!r}") from None
        if event.get("type") == "stream" and (sid is None or event["sid"] == sid):
            seen += event["payload"]
        elif others is not None:
            others.append(event)
    return seen


async def event_where(
    comm: WebsocketCommunicator,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    """The first event matching ``predicate``, skipping terminal output and others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching event")
        event = await comm.receive_json_from(timeout=left)
        if predicate(event):
            return event
