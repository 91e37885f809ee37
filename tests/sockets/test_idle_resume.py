"""Sockets and idle auto-stop: an open socket marks its container in use, and connecting to
an idle-suspended container resumes it, with info events, before the socket proceeds."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from tests.support.sockets import next_event, stream_until
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.idle import IDLE_REASON
from vm_manager.models import Container

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]

RESUMING = "Resuming the container after it was idle..."
RESUMED = "Container resumed"


@pytest.fixture
def idle_container(running_container: Container) -> Container:
    """``running_container`` as the reconciler leaves it after an idle suspension."""
    driver = InMemoryNodeDriver("node1")
    async_to_sync(driver.vm_suspend)(running_container.vm_id)
    Container.objects.filter(pk=running_container.pk).update(
        idle_suspended=True, status=Container.Status.STOPPED, status_reason=IDLE_REASON
    )
    running_container.refresh_from_db()
    return running_container


def fake_vm(container: Container):
    return InMemoryNodeDriver.node_state("node1").vms[container.vm_id]


async def test_a_console_connect_resumes_an_idle_container_with_info_events(
    open_socket, idle_container, alice_cookie
):
    comm = await open_socket(f"/ws/containers/{idle_container.pk}/", alice_cookie)

    assert await next_event(comm) == {"type": "info", "message": RESUMING}
    assert await next_event(comm) == {"type": "info", "message": RESUMED}
    hello = await next_event(comm)
    assert hello["message"] == "Connected"
    await stream_until(comm, "bash-", sid="s1")
    container = await database_sync_to_async(Container.objects.get)(pk=idle_container.pk)
    assert (container.status, container.idle_suspended) == (Container.Status.RUNNING, False)
    assert fake_vm(container).last_boot == "restored"


async def test_an_editor_connect_resumes_it_with_its_own_event_shape(
    open_socket, idle_container, alice_cookie
):
    comm = await open_socket(f"/ws/fs/{idle_container.pk}/", alice_cookie)

    assert await next_event(comm) == {"event": "info", "message": RESUMING}
    assert await next_event(comm) == {"event": "info", "message": RESUMED}
    assert await next_event(comm) == {"event": "connected"}
    assert fake_vm(idle_container).state == "running"


async def test_a_socket_connect_marks_the_container_in_use(
    open_socket, running_container, alice_cookie
):
    assert running_container.last_active_at is None

    comm = await open_socket(f"/ws/fs/{running_container.pk}/", alice_cookie)
    assert await next_event(comm) == {"event": "connected"}

    container = await database_sync_to_async(Container.objects.get)(pk=running_container.pk)
    assert container.last_active_at is not None
    assert InMemoryNodeDriver.node_state("node1").calls.count(("vm_start", container.vm_id)) == 1
