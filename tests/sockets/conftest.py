"""Fixtures for the IDE sockets: logged-in communicators on the real ASGI application.

- ``running_container``: alice's container on ``node1`` with its in-memory VM running.
- ``open_socket(path, cookie)``: a ``WebsocketCommunicator`` through session auth and the
  Origin check, connected; ``cookie_for(user)`` is a session cookie made in a sync fixture.
- ``events``/``stream_until``: read helpers with timeouts.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from pequeroku.asgi import application
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.guest.revisions import LocalRevisionStore
from vm_manager.models import Container, ContainerType, Node

ORIGIN = b"http://localhost"
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _fresh_revisions() -> None:
    LocalRevisionStore.reset()


@pytest.fixture
def seeded(transactional_db: None) -> None:
    """The migrations' seed rows (types, ``default`` template), which a flush removes.

    Socket tests need committed rows (``transaction=True``); serialized rollback would restore
    them but collides with content types on PostgreSQL, so the seed functions run again.
    """
    schema_editor = SimpleNamespace(connection=connection)
    for module, function in (
        ("0002_seed_container_types", "seed_container_types"),
        ("0003_seed_default_template", "seed_default_template"),
        ("0005_default_template_ide_files", "add_ide_files"),
    ):
        seed = getattr(importlib.import_module(f"vm_manager.migrations.{module}"), function)
        seed(django_apps, schema_editor)


@pytest.fixture
def container_type(seeded: None) -> ContainerType:
    return ContainerType.objects.get(container_type_name="small")


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.fixture
def alice_cookie(user: User) -> str:
    return session_cookie(user)


@pytest.fixture
def bob_cookie(other_user: User) -> str:
    return session_cookie(other_user)


def start_vm(node: Node, container: Container) -> Path:
    """Create and start the container's VM on the in-memory node; returns its /app on disk."""
    driver = InMemoryNodeDriver(node.name)
    spec = {"vm_id": container.vm_id, "vcpus": 1, "memory_mb": 512, "disk_gib": 1, "image": "x"}
    async_to_sync(driver.vm_create)(spec)  # type: ignore[arg-type]
    async_to_sync(driver.vm_start)(container.vm_id)
    return InMemoryNodeDriver.node_state(node.name).vms[container.vm_id].workspace


@pytest.fixture
def running_container(
    user: User, node: Node, make_container: Callable[..., Container]
) -> Container:
    container = make_container(user, node=node, status=Container.Status.RUNNING)
    start_vm(node, container)
    return container


@pytest.fixture
def workspace(running_container: Container) -> Path:
    node = running_container.node
    assert node is not None
    return InMemoryNodeDriver.node_state(node.name).vms[running_container.vm_id].workspace


def communicator(path: str, cookie: str | None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.fixture
async def open_socket() -> AsyncIterator[Callable[..., Any]]:
    opened: list[WebsocketCommunicator] = []

    async def open_(path: str, cookie: str | None) -> WebsocketCommunicator:
        comm = communicator(path, cookie)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        opened.append(comm)
        return comm

    yield open_
    for comm in opened:
        await comm.disconnect(timeout=TIMEOUT)


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
