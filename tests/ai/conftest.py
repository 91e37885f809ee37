"""AI fixtures: a real local OpenAI-compatible server, Config pointing at it, a running
container on the in-memory node, and sockets opened through the project's routing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from internal_config.models import Config
from pequeroku.routing import websocket_urlpatterns
from tests.ai.fake_provider import FakeProvider
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, ContainerType, Node, ResourceQuota

INPUT_PRICE = "0.000001"
OUTPUT_PRICE = "0.000002"
MAIN_PY = "print('hello from the container')\n"


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def ai_config(db: Any, fake_provider: FakeProvider) -> FakeProvider:
    values = {
        "openai_api_url": fake_provider.url,
        "openai_api_key": fake_provider.api_key,
        "openai_model": "fake-model",
        "token_input_price": INPUT_PRICE,
        "token_output_price": OUTPUT_PRICE,
    }
    for name, value in values.items():
        Config.objects.update_or_create(name=name, defaults={"value": value})
    return fake_provider


@pytest.fixture
def container_type(db: Any) -> ContainerType:
    # Socket tests flush the database between tests, seeded rows included.
    small, _ = ContainerType.objects.get_or_create(
        container_type_name="small", defaults={"memory_mb": 1024, "vcpus": 1, "disk_gib": 5}
    )
    return small


@pytest.fixture
def set_ai_uses(db: Any) -> Callable[[User, int], None]:
    def set_uses(owner: User, per_day: int) -> None:
        ResourceQuota.objects.filter(user=owner).update(ai_use_per_day=per_day)

    return set_uses


@pytest.fixture
def running_container(
    user: User, node: Node, make_container: Callable[..., Container], set_ai_uses: Any
) -> Container:
    set_ai_uses(user, 5)
    container = make_container(user, node=node, status=Container.Status.RUNNING)
    driver = InMemoryNodeDriver.for_node(node)
    async_to_sync(driver.vm_create)(
        {
            "vm_id": container.vm_id,
            "vcpus": 1,
            "memory_mb": 1024,
            "disk_gib": 5,
            "image": "default",
        }
    )
    async_to_sync(driver.vm_start)(container.vm_id)
    async_to_sync(driver.write_file)(container.vm_id, "/app/main.py", MAIN_PY.encode())
    return container


@pytest.fixture
def open_ai_socket() -> Callable[..., Any]:
    """``await open_ai_socket(user, pk)`` -> a connected communicator (caller disconnects)."""

    async def open_socket(owner: Any, pk: int) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            URLRouter(websocket_urlpatterns),
            f"/ws/ai/{pk}/",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
        )
        communicator.scope["user"] = owner
        connected, _ = await communicator.connect()
        assert connected
        return communicator

    return open_socket


@pytest.fixture
def ask_once(open_ai_socket: Callable[..., Any]) -> Callable[..., Any]:
    """``await ask_once(user, pk, text)`` -> the turn's events, from the message to the
    closing ``connected``, on a socket opened (greeting skipped) and closed for that turn."""

    async def ask(owner: Any, pk: int, text: str) -> list[dict[str, Any]]:
        socket = await open_ai_socket(owner, pk)
        await receive_until(socket, "connected")
        await socket.send_json_to({"text": text})
        events = await receive_until(socket, "connected")
        await socket.disconnect()
        return events

    return ask


async def receive_until(
    communicator: WebsocketCommunicator, event: str, timeout: float = 10
) -> list[dict[str, Any]]:
    """Every JSON event up to and including the first ``event``."""
    events: list[dict[str, Any]] = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        events.append(message)
        if message.get("event") == event:
            return events


async def receive_close_code(communicator: WebsocketCommunicator, timeout: float = 5) -> int:
    """Skip events until the socket closes; return the close code."""
    while True:
        message = await communicator.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return message.get("code", 1000)
