"""AI socket helpers: the prices and file the fixtures set up, and reading a socket's events."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator

INPUT_PRICE = "0.000001"
OUTPUT_PRICE = "0.000002"
MAIN_PY = "print('hello from the container')\n"


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
