"""Idle auto-stop on a real node agent and QEMU guest (marker ``vm``): the reconciler
suspends an idle container (no QEMU left), and a console connect resumes it with info
events; the guest's file and background process are still there."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.utils import timezone

from internal_config.services import config_set
from node_agent.qemu import qemu_alive, read_pid
from tests.support.sockets import next_event, stream_until
from vm_manager.drivers import get_node_driver
from vm_manager.idle import IDLE_REASON
from vm_manager.models import Container
from vm_manager.reconciler import reconcile_once

from .test_real_vm import GUEST_TIMEOUT, agent, guest_container, guest_image_dir, start_agent, token

__all__ = ["agent", "guest_container", "guest_image_dir", "start_agent", "token"]  # fixtures

pytestmark = [pytest.mark.vm, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def suspend_for_idleness(container: Container, agent_dir) -> None:
    driver = get_node_driver(container.node)
    answer = async_to_sync(driver.exec)(
        container.vm_id,
        "echo kept > /app/idle.txt && (setsid sleep 4242 >/dev/null 2>&1 < /dev/null &) && sync",
    )
    assert answer["exit_code"] == 0, answer
    vm_dir = agent_dir / "vms" / container.vm_id
    instance_id = str(json.loads((vm_dir / "vm.json").read_text())["instance_id"])
    pid = read_pid(vm_dir / "qemu.pid")
    config_set("idle_suspend_minutes", "10")
    Container.objects.filter(pk=container.pk).update(
        last_active_at=timezone.now() - timedelta(minutes=11)
    )

    report = reconcile_once()

    container.refresh_from_db()
    assert report.suspended_idle == 1, report.error_messages
    assert (container.status, container.status_reason) == (Container.Status.STOPPED, IDLE_REASON)
    assert container.idle_suspended and container.suspended
    assert not qemu_alive(pid, instance_id)


async def test_idle_auto_stop_suspends_and_a_console_connect_resumes(
    guest_container, agent, alice_cookie, open_socket
):
    await database_sync_to_async(suspend_for_idleness)(guest_container, agent.data_dir)

    console = await open_socket(f"/ws/containers/{guest_container.pk}/", alice_cookie)

    first = await next_event(console, timeout=GUEST_TIMEOUT)
    assert first == {"type": "info", "message": "Resuming the container after it was idle..."}
    resumed = await next_event(console, timeout=GUEST_TIMEOUT * 3)
    assert resumed == {"type": "info", "message": "Container resumed"}
    hello = await next_event(console, timeout=GUEST_TIMEOUT)
    assert hello["message"] == "Connected"
    await console.send_to(text_data="cat /app/idle.txt; pgrep -xc sleep")
    await stream_until(console, "kept\r\n1\r\n", sid="s1", timeout=GUEST_TIMEOUT)
    container = await database_sync_to_async(Container.objects.get)(pk=guest_container.pk)
    assert (container.status, container.idle_suspended) == (Container.Status.RUNNING, False)
    assert container.last_boot == "restored"
