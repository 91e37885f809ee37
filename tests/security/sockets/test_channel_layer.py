"""H2: a message pushed into the channel layer is never taken for a browser's frame.

The in-memory tests show the consumers' side (only their own event types pass); the
``integration`` ones go through the machine's Redis, where messages written without the
layer's keys fail authentication.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

from tests.sockets.test_editor import connected_editor, request
from tests.support.sockets import next_event
from vm_manager.ide.editor import group_name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PLANT = {"action": "write_file", "req_id": "x", "path": "/app/planted.sh", "content": "evil"}


def forged_frame() -> dict[str, str]:
    return {"type": "websocket.receive", "text": json.dumps(PLANT)}


async def still_answers(comm) -> None:
    reply = await request(comm, "read_file", path="/app/planted.sh")
    assert reply["event"] in ("ok", "error")
    assert reply.get("data", {}).get("content") != "evil"


async def test_a_client_frame_sent_through_the_layer_writes_nothing(
    running_container, alice_cookie, open_socket, workspace, caplog
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)

    await get_channel_layer().group_send(group_name(running_container.pk), forged_frame())

    assert await comm.receive_nothing(timeout=0.3)
    assert not (workspace / "planted.sh").exists()
    assert "refused a channel-layer message of type 'websocket.receive'" in caplog.text
    await still_answers(comm)


async def test_a_layer_message_naming_a_consumer_method_cannot_close_the_socket(
    running_container, alice_cookie, open_socket
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)

    for kind in ("close", "websocket.disconnect", "disconnect", "connect"):
        await get_channel_layer().group_send(group_name(running_container.pk), {"type": kind})

    assert await comm.receive_nothing(timeout=0.3)
    await still_answers(comm)


# -- through Redis ---------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("PEQUEROKU_TEST_REDIS")
    if not url:
        pytest.skip("needs PEQUEROKU_TEST_REDIS (the integration pass of scripts/test.sh sets it)")
    return url


@pytest.mark.integration
async def test_a_message_forged_into_redis_without_the_key_writes_nothing(
    redis_url, running_container, alice_cookie, open_socket, workspace, caplog
):
    caplog.set_level(logging.WARNING, logger="pequeroku.layer_guard")
    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer)
    comm = await connected_editor(open_socket, running_container, alice_cookie)
    # What anyone who can reach Redis can do: write msgpack to the group's channels.
    intruder = RedisChannelLayer(hosts=[redis_url], prefix=layer.prefix)

    await intruder.group_send(group_name(running_container.pk), forged_frame())

    assert await comm.receive_nothing(timeout=1.0)
    assert not (workspace / "planted.sh").exists()
    assert "failed authentication" in caplog.text
    await still_answers(comm)
    await intruder.close_pools()


@pytest.mark.integration
async def test_a_client_frame_sent_through_redis_with_the_key_writes_nothing(
    redis_url, running_container, alice_cookie, open_socket, workspace
):
    comm = await connected_editor(open_socket, running_container, alice_cookie)

    await get_channel_layer().group_send(group_name(running_container.pk), forged_frame())

    assert await comm.receive_nothing(timeout=1.0)
    assert not (workspace / "planted.sh").exists()
    # The layer itself still carries the editor's own broadcasts.
    other = await connected_editor(open_socket, running_container, alice_cookie)
    await request(other, "write_file", path="/app/ok.txt", content="1", prev_rev=0)
    assert (await next_event(comm))["event"] == "file_changed"
