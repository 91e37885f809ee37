"""``channel_layer_accepts``: what a consumer may be handed through the channel layer."""

from __future__ import annotations

import pytest

from pequeroku.layer_guard import channel_layer_accepts


class Consumer:
    channel_receive = channel_layer_accepts("fs.broadcast")


def queue_of(*messages: object):
    pending = list(messages)

    async def receive() -> object:
        return pending.pop(0)

    return receive


async def test_only_the_listed_types_are_handed_over():
    consumer = Consumer()
    consumer.channel_receive = queue_of(
        {"type": "websocket.receive", "text": "{}"},
        {"type": "close"},
        {"no": "type"},
        "not a dict",
        {"type": "fs.broadcast", "payload": {}},
    )

    assert await consumer.channel_receive() == {"type": "fs.broadcast", "payload": {}}


def test_a_client_message_type_cannot_be_allowed():
    with pytest.raises(ValueError, match="websocket"):
        channel_layer_accepts("websocket.receive")
