"""The editor through the Redis channel layer (marker ``integration``).

Runs in the integration pass, where PEQUEROKU_TEST_REDIS points the channel layer at the
machine's Redis: broadcasts cross the real layer and revisions live in Redis, shared by every
worker's layer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

from tests.support.redis_keys import integration_redis_url, redis_keys_delete
from tests.support.sockets import next_event
from vm_manager.guest.revisions import RedisRevisionStore, revision_store

from .test_editor import check_fifty_editors_receive_one_file_changed, path_of, request

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

PREFIX = "pequeroku-test:"


@pytest.fixture(autouse=True)
def redis_url() -> Iterator[str]:
    url = integration_redis_url()
    redis_keys_delete(url, f"{PREFIX}revisions:*")
    yield url


def other_worker_layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[url], prefix=PREFIX)


async def test_fifty_editors_receive_one_file_changed_through_redis(
    running_container, alice_cookie, open_socket, settings
):
    settings.SOCKETS_MAX_PER_USER = 64
    assert isinstance(get_channel_layer(), RedisChannelLayer)
    await check_fifty_editors_receive_one_file_changed(open_socket, running_container, alice_cookie)


async def test_editor_revisions_live_in_redis(
    running_container, alice_cookie, open_socket, redis_url
):
    comm = await open_socket(path_of(running_container), alice_cookie)
    await next_event(comm)
    reply = await request(comm, "write_file", path="/app/a.txt", content="1", prev_rev=0)
    assert reply["rev"] == 1

    client = redis.Redis.from_url(redis_url)
    stored = client.hget(f"{PREFIX}revisions:{running_container.pk}", "/app/a.txt")
    client.close()
    assert stored == b"1"


async def test_a_write_on_another_worker_makes_this_one_conflict(
    running_container, alice_cookie, open_socket, redis_url
):
    comm = await open_socket(path_of(running_container), alice_cookie)
    await next_event(comm)
    await request(comm, "write_file", path="/app/b.txt", content="mine", prev_rev=0)
    elsewhere = other_worker_layer(redis_url)
    assert await RedisRevisionStore(elsewhere).bump(running_container.pk, "/app/b.txt", 1) == 2

    reply = await request(comm, "write_file", path="/app/b.txt", content="stale", prev_rev=1)

    assert reply["error"] == "conflict" and reply["rev"] == 2
    await elsewhere.close_pools()


async def test_two_workers_racing_on_one_revision_one_wins(redis_url):
    first = revision_store(other_worker_layer(redis_url))
    second = revision_store(other_worker_layer(redis_url))
    assert await first.bump(424242, "/app/r") == 1

    results = [await first.bump(424242, "/app/r", 1), await second.bump(424242, "/app/r", 1)]

    assert results == [2, None]
    assert await second.get(424242, "/app/r") == 2


async def test_a_rest_upload_reaches_an_editor_through_redis(
    user, running_container, workspace, alice_cookie, open_socket
):
    from .test_write_path import (
        test_a_rest_upload_reaches_the_editor_and_a_stale_save_conflicts as upload_reaches_editor,
    )

    assert isinstance(get_channel_layer(), RedisChannelLayer)
    await upload_reaches_editor(user, running_container, workspace, alice_cookie, open_socket)
