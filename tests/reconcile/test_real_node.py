"""The reconciler against a real node agent booting a real QEMU guest (marker ``vm``).

One VM: desired running becomes status running with the guest answering over SSH; desired
stopped leaves no QEMU process and status stopped; deletion removes the VM directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync

from node_agent.qemu import qemu_alive, read_pid
from tests.support.agents import TOKEN, AgentProcess
from tests.support.fixtures.agents import guest_image_dir, start_agent, token
from vm_manager import services
from vm_manager.drivers import get_node_driver
from vm_manager.models import Container, ContainerType
from vm_manager.reconciler import reconcile_once
from vm_manager.services import node_register

__all__ = ["guest_image_dir", "start_agent", "token"]  # fixtures, imported for this module

pytestmark = [pytest.mark.vm, pytest.mark.django_db, pytest.mark.timeout(600)]

BOOT_TIMEOUT = 300.0


@pytest.fixture
def agent(start_agent: Callable[..., AgentProcess], guest_image_dir: Path) -> AgentProcess:
    return start_agent(guest_image_dir, accel="auto")


def reconcile_until(container: Container, status: str, timeout: float) -> Container:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile_once()
        container.refresh_from_db()
        if container.status == status:
            return container
        time.sleep(1)
    raise AssertionError(
        f"container still {container.status} ({container.status_reason!r}) after {timeout:.0f}s"
    )


def test_a_container_boots_on_a_real_node_and_stops_there(user, agent, settings):
    settings.NODE_DRIVER = "vm_manager.drivers.http.HttpNodeDriver"
    node = node_register("real", url=agent.url, token=TOKEN)
    tiny = ContainerType.objects.create(
        container_type_name="vm-test", memory_mb=512, vcpus=1, disk_gib=4
    )
    container = Container.objects.create(user=user, container_type=tiny, node=node)

    started = time.monotonic()
    reconcile_until(container, Container.Status.RUNNING, BOOT_TIMEOUT)
    boot_seconds = time.monotonic() - started

    node.refresh_from_db()
    assert node.healthy and node.capacity_vcpus > 0 and node.capacity_mem_mb > 0
    driver = get_node_driver(node)
    answer = async_to_sync(driver.exec)(container.vm_id, "cat /run/pequeroku/instance_id")
    assert answer["exit_code"] == 0 and answer["stdout"].strip()
    vm_dir = agent.data_dir / "vms" / container.vm_id
    instance_id = str(json.loads((vm_dir / "vm.json").read_text())["instance_id"])
    pid = read_pid(vm_dir / "qemu.pid")
    assert qemu_alive(pid, instance_id)

    services.container_power_off(container)
    report = reconcile_once()

    container.refresh_from_db()
    assert report.stopped == 1
    assert container.status == Container.Status.STOPPED
    assert not qemu_alive(pid, instance_id)

    services.container_request_delete(container)
    reconcile_once()
    assert not Container.objects.filter(pk=container.pk).exists()
    assert not vm_dir.exists()
    print(f"\nreconcile to running with SSH: {boot_seconds:.1f}s")  # noqa: T201
