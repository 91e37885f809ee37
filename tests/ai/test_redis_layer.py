"""The AI socket through the Redis channel layer, as production runs it with several workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels_redis.core import RedisChannelLayer

from internal_config.models import AIUsageLog
from tests.ai.fake_provider import TextReply, ToolCallReply
from tests.support.ai import receive_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]


@pytest.fixture
def redis_layer(settings: Any) -> Iterator[None]:
    url = os.environ.get("PEQUEROKU_TEST_REDIS")
    if not url:
        pytest.skip("set PEQUEROKU_TEST_REDIS=redis://... to run against Redis")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": url, "socket_timeout": 30}],
                "prefix": "pequeroku-test-ai:",
            },
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def test_a_tool_turn_through_redis_reaches_the_users_other_socket(
    redis_layer, ai_config, user, running_container, make_container, open_ai_socket
):
    ai_config.queue(
        ToolCallReply("read_file", {"path": "main.py"}),
        TextReply(["It prints", " hello."]),
    )
    other_container = await database_sync_to_async(make_container)(user)
    talking = await open_ai_socket(user, running_container.pk)
    watching = await open_ai_socket(user, other_container.pk)
    assert isinstance(get_channel_layer(), RedisChannelLayer)
    await receive_until(talking, "connected")
    await receive_until(watching, "connected")

    await talking.send_json_to({"text": "What does main.py do?"})
    events = await receive_until(talking, "connected")

    assert [e["event"] for e in events] == [
        "start_text",
        "text",
        "finish_text",
        "start_text",
        "text",
        "text",
        "finish_text",
        "memory_data",
        "connected",
    ]
    assert events[1]["content"] == "Using read_file..."
    assert events[-1] == {"event": "connected", "ai_uses_left_today": 4}
    assert await watching.receive_json_from(timeout=5) == {
        "event": "connected",
        "ai_uses_left_today": 4,
    }
    assert await AIUsageLog.objects.filter(user=user).acount() == 1
    await talking.disconnect()
    await watching.disconnect()
