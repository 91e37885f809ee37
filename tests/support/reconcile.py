"""Reconciler helpers: what the in-memory node was asked to do and the state its VMs are in."""

from __future__ import annotations

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container


def calls(node_name: str, op: str) -> list[str]:
    return [vm for name, vm in InMemoryNodeDriver.node_state(node_name).calls if name == op]


def vm_state(node_name: str, container: Container) -> str | None:
    vm = InMemoryNodeDriver.node_state(node_name).vms.get(container.vm_id)
    return vm.state if vm else None
