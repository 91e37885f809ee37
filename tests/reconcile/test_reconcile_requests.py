"""Reconcile requests: they really run in the background once the change has committed, on a
bounded pool, coalesced per container."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from django.db.utils import OperationalError

from internal_config.models import AuditLog
from tests.support.reconcile import vm_state
from vm_manager import services
from vm_manager.models import Container, ContainerType
from vm_manager.reconciler import ReconcileRequests, reconcile_requests_idle


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll ``predicate``; a read that meets the background reconcile's write is polled again
    (the tests' shared-cache SQLite answers "table is locked" instead of waiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OperationalError):
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
    assert reconcile_requests_idle(timeout=20)
    assert vm_state("node1", container) == "stopped"
    actions = set(
        AuditLog.objects.filter(target_id=str(container.pk)).values_list("action", flat=True)
    )
    assert {"container.create", "container.power_off"} <= actions


class BlockingRun:
    """A stand-in reconcile that records its batches and holds until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def __call__(self, ids: list[int]) -> None:
        with self._lock:
            self.batches.append(ids)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.release.wait(10)
        with self._lock:
            self.active -= 1


def test_a_second_request_for_a_waiting_container_does_not_queue_again():
    run = BlockingRun()
    requests = ReconcileRequests(run, workers=1)
    requests.submit([1])
    assert wait_for(lambda: run.batches == [[1]])

    assert requests.submit([2]) == [2]
    assert requests.submit([2]) == []
    assert requests.submit([2, 3]) == [3]
    run.release.set()

    assert requests.wait_idle(10)
    assert run.batches == [[1], [2, 3]]


def test_a_container_requested_while_its_run_is_going_runs_again_after_it():
    run = BlockingRun()
    requests = ReconcileRequests(run, workers=2)
    requests.submit([1])
    assert wait_for(lambda: run.batches == [[1]])

    requests.submit([1])
    time.sleep(0.2)
    assert run.batches == [[1]]  # not a second, overlapping run for the same container
    run.release.set()

    assert requests.wait_idle(10)
    assert run.batches == [[1], [1]]


def test_targeted_reconciles_run_on_at_most_two_workers():
    run = BlockingRun()
    requests = ReconcileRequests(run)
    for pk in range(1, 6):
        requests.submit([pk])
        time.sleep(0.05)
    assert wait_for(lambda: run.active == 2)
    time.sleep(0.2)

    assert run.most_active == 2
    run.release.set()
    assert requests.wait_idle(10)
    assert sorted(pk for batch in run.batches for pk in batch) == [1, 2, 3, 4, 5]
    assert len(run.batches) < 5  # the waiting ones were taken together


def test_a_failing_run_does_not_stop_the_worker():
    batches: list[list[int]] = []

    def run(ids: list[int]) -> None:
        batches.append(ids)
        if ids == [1]:
            raise RuntimeError("node exploded")

    requests = ReconcileRequests(run, workers=1)
    requests.submit([1])
    assert requests.wait_idle(10)
    requests.submit([2])

    assert requests.wait_idle(10)
    assert batches == [[1], [2]]
