"""A requested reconcile really runs, in the background, once the request has committed."""

from __future__ import annotations

import threading
import time

import pytest

from internal_config.models import AuditLog
from vm_manager import services
from vm_manager.models import Container, ContainerType

from .conftest import vm_state


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(transaction=True)
def test_powering_off_stops_the_vm_in_the_background(user, make_node, settings):
    settings.RECONCILE_IN_BACKGROUND = True
    node = make_node("node1")
    small = ContainerType.objects.get_or_create(
        container_type_name="bg", defaults={"memory_mb": 512, "vcpus": 1, "disk_gib": 1}
    )[0]
    user.quota.allowed_types.add(small)
    container = services.container_create(user=user, container_type_id=small.pk)
    assert container.node == node

    assert wait_for(lambda: Container.objects.get(pk=container.pk).status == "running")
    services.container_power_off(container)

    assert wait_for(lambda: Container.objects.get(pk=container.pk).status == "stopped")
    assert vm_state("node1", container) == "stopped"
    actions = set(
        AuditLog.objects.filter(target_id=str(container.pk)).values_list("action", flat=True)
    )
    assert {"container.create", "container.power_off"} <= actions
    for thread in threading.enumerate():
        if thread.name == "reconcile-request":
            thread.join(timeout=20)
