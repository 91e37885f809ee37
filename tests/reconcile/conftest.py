"""Fixtures for the reconciler: a run helper and the in-memory node's call log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container
from vm_manager.reconciler import ReconcileReport, reconcile_once


@pytest.fixture
def reconcile() -> Callable[..., ReconcileReport]:
    def run(*ids: int, **kwargs: Any) -> ReconcileReport:
        return reconcile_once(list(ids) if ids else None, **kwargs)

    return run


def calls(node_name: str, op: str) -> list[str]:
    return [vm for name, vm in InMemoryNodeDriver.node_state(node_name).calls if name == op]


def vm_state(node_name: str, container: Container) -> str | None:
    vm = InMemoryNodeDriver.node_state(node_name).vms.get(container.vm_id)
    return vm.state if vm else None
