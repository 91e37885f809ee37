"""AI fixtures: those shared with security/ai come from ``tests.support.fixtures.ai`` (a real
local OpenAI-compatible server, Config pointing at it, a running container on the in-memory
node, sockets opened through the project's routing); ``ask_once`` is this directory's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.ai import receive_until
from tests.support.fixtures.ai import (
    ai_config,
    container_type,
    fake_provider,
    open_ai_socket,
    running_container,
    set_ai_uses,
)

# Fixtures defined in tests.support, registered here by name.
__all__ = [
    "ai_config",
    "container_type",
    "fake_provider",
    "open_ai_socket",
    "running_container",
    "set_ai_uses",
]


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
