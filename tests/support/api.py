"""HTTP API helpers: a container's VM booted on its in-memory node, its workspace on disk, and
an HTTP Basic ``Authorization`` header."""

from __future__ import annotations

import base64
from typing import Any

from asgiref.sync import async_to_sync

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container


def start_vm(container: Container) -> Container:
    """Create and boot the container's VM on its in-memory node, as the reconciler would."""
    driver = InMemoryNodeDriver(container.node.name)
    async_to_sync(driver.vm_create)(
        {
            "vm_id": container.vm_id,
            "vcpus": container.vcpus,
            "memory_mb": container.memory_mb,
            "disk_gib": container.disk_gib,
            "image": "default",
        }
    )
    async_to_sync(driver.vm_start)(container.vm_id)
    Container.objects.filter(pk=container.pk).update(status=Container.Status.RUNNING)
    container.refresh_from_db()
    return container


def workspace(container: Container) -> Any:
    """The host folder standing in for the container's /app."""
    return InMemoryNodeDriver.node_state(container.node.name).vms[container.vm_id].workspace


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
