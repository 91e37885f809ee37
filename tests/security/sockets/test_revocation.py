"""M1: an open socket follows access. When a user loses access to a container, each of their
open console, editor and AI sockets on it closes with 4403 within 5 seconds, and no frame sent
after the change has any effect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from internal_config.models import AuditLog
from tests.support.sockets import communicator, next_event
from vm_manager import services
from vm_manager.ide import base
from vm_manager.models import Container, ResourceQuota, Team, TeamMembership

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

REVOKED_WITHIN = 5.0
WRITE = {"action": "write_file", "req_id": 7, "path": "/app/after.txt", "content": "late"}


class Teammate:
    """bob in alice's team, logged in through a test client that can also log him out."""

    def __init__(self, user: User, team: Team, membership: TeamMembership) -> None:
        self.user, self.team, self.membership = user, team, membership
        self.client = Client()
        self.client.force_login(user)
        self.cookie = (
            f"{settings.SESSION_COOKIE_NAME}="
            f"{self.client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )


@pytest.fixture
def teammate(user: User, other_user: User, running_container: Container) -> Teammate:
    team = Team.objects.create(name="crew", owner=user)
    TeamMembership.objects.get_or_create(team=team, user=user)
    membership = TeamMembership.objects.create(team=team, user=other_user)
    ResourceQuota.objects.filter(user=other_user).update(ai_use_per_day=5)
    return Teammate(other_user, team, membership)


async def open_as(path: str, cookie: str) -> WebsocketCommunicator:
    comm = communicator(path, cookie)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


async def opened_editor(container: Container, cookie: str) -> WebsocketCommunicator:
    comm = await open_as(f"/ws/fs/{container.pk}/", cookie)
    assert await next_event(comm) == {"event": "connected"}
    return comm


async def close_code_within(comm: WebsocketCommunicator, timeout: float) -> int:
    """The close code the socket gets, skipping the events before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await comm.receive_output(timeout=max(0.01, deadline - loop.time()))
        if message["type"] == "websocket.close":
            return message["code"]


def remove_membership(mate: Teammate) -> None:
    mate.membership.delete()


def deactivate_membership(mate: Teammate) -> None:
    mate.membership.active = False
    mate.membership.save()


def deactivate_team(mate: Teammate) -> None:
    mate.team.active = False
    mate.team.save()


def deactivate_user(mate: Teammate) -> None:
    mate.user.is_active = False
    mate.user.save()


def change_password(mate: Teammate) -> None:
    mate.user.set_password("a whole new secret 42")
    mate.user.save()


def log_out(mate: Teammate) -> None:
    mate.client.logout()


def delete_container(mate: Teammate) -> None:
    container = Container.objects.get(user__username="alice")
    services.container_request_delete(container)


CAUSES: dict[str, Callable[[Teammate], None]] = {
    "membership removed": remove_membership,
    "membership deactivated": deactivate_membership,
    "team deactivated": deactivate_team,
    "user deactivated": deactivate_user,
    "password changed": change_password,
    "logged out": log_out,
    "container deleted": delete_container,
}


async def test_a_revoked_teammates_open_editor_is_closed_4403_and_its_next_write_does_nothing(
    running_container, workspace, teammate
):
    comm = await opened_editor(running_container, teammate.cookie)

    await database_sync_to_async(remove_membership)(teammate)
    await comm.send_json_to(WRITE)

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    await comm.send_json_to(WRITE)
    await asyncio.sleep(0.2)
    assert not (workspace / "after.txt").exists()
    await comm.disconnect()


@pytest.mark.parametrize("cause", list(CAUSES))
async def test_losing_access_closes_the_open_editor_with_4403(
    cause, running_container, workspace, teammate
):
    comm = await opened_editor(running_container, teammate.cookie)

    await database_sync_to_async(CAUSES[cause])(teammate)

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    await comm.send_json_to(WRITE)
    await asyncio.sleep(0.2)
    assert not (workspace / "after.txt").exists()
    await comm.disconnect()


async def test_a_revoked_teammates_console_is_closed_4403_and_types_nothing(
    running_container, workspace, teammate
):
    comm = await open_as(f"/ws/containers/{running_container.pk}/", teammate.cookie)
    hello = await next_event(comm)
    assert hello["sessions"] == ["s1"]

    await database_sync_to_async(remove_membership)(teammate)
    await comm.send_to(text_data="echo typed > /app/after.txt")

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    await comm.send_to(text_data="echo typed > /app/after.txt")
    await asyncio.sleep(0.3)
    assert not (workspace / "after.txt").exists()
    await comm.disconnect()


async def test_a_revoked_teammates_ai_socket_is_closed_4403_and_prompts_nothing(
    running_container, teammate
):
    comm = await open_as(f"/ws/ai/{running_container.pk}/", teammate.cookie)
    greeting = await next_event(comm)
    while greeting.get("event") != "connected":
        greeting = await next_event(comm)

    await database_sync_to_async(deactivate_team)(teammate)
    await comm.send_json_to({"text": "write a file"})

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    await comm.disconnect()
    turns = await database_sync_to_async(
        lambda: AuditLog.objects.filter(action__startswith="agent_tool").count()
    )()
    assert turns == 0
    quota = await database_sync_to_async(ResourceQuota.objects.get)(user=teammate.user)
    assert await database_sync_to_async(quota.ai_uses_left_today)() == 5


async def test_a_change_made_without_signals_still_stops_the_next_frame(
    running_container, workspace, teammate
):
    comm = await opened_editor(running_container, teammate.cookie)

    await database_sync_to_async(TeamMembership.objects.filter(pk=teammate.membership.pk).update)(
        active=False
    )
    await asyncio.sleep(base.RECHECK_SECONDS + 0.1)
    await comm.send_json_to(WRITE)

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    assert not (workspace / "after.txt").exists()
    await comm.disconnect()


async def test_an_unrelated_change_keeps_the_socket_open(running_container, teammate):
    comm = await opened_editor(running_container, teammate.cookie)

    def rename_team() -> None:
        teammate.team.name = "crew two"
        teammate.team.save()

    await database_sync_to_async(rename_team)()

    assert await comm.receive_nothing(timeout=0.5)
    await comm.send_json_to({"action": "read_file", "req_id": 1, "path": "/app/x.txt"})
    reply: dict[str, Any] = await next_event(comm)
    assert reply["event"] == "ok"
    await comm.disconnect()


async def test_a_revocation_is_audited_once(running_container, teammate):
    comm = await opened_editor(running_container, teammate.cookie)

    await database_sync_to_async(remove_membership)(teammate)

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    await comm.disconnect()
    rows = await database_sync_to_async(
        lambda: list(
            AuditLog.objects.filter(user=teammate.user, action="ws.revoked").values_list(
                "target_id", flat=True
            )
        )
    )()
    assert rows == [str(running_container.pk)]


@pytest.mark.integration
async def test_a_revocation_reaches_the_socket_through_the_redis_layer(
    running_container, workspace, teammate
):
    from channels.layers import get_channel_layer
    from channels_redis.core import RedisChannelLayer

    if not isinstance(get_channel_layer(), RedisChannelLayer):
        pytest.skip("needs PEQUEROKU_TEST_REDIS (the integration pass of scripts/test.sh sets it)")
    comm = await opened_editor(running_container, teammate.cookie)

    await database_sync_to_async(deactivate_membership)(teammate)

    assert await close_code_within(comm, REVOKED_WITHIN) == 4403
    await comm.send_json_to(WRITE)
    await asyncio.sleep(0.2)
    assert not (workspace / "after.txt").exists()
    await comm.disconnect()
