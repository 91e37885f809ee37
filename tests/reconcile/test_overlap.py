"""Two reconcilers at once (cron overlap) never act on the same container twice.

Runs against PostgreSQL (the integration marker): two threads, each with its own connection,
released together by a barrier. The in-memory node is shared by the threads, so its call log
counts every VM operation of both runs.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from internal_config.models import AuditLog
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, ContainerType
from vm_manager.reconciler import ReconcileReport, reconcile_once

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def container_type() -> ContainerType:
    # A transactional test flushes the seeded types between tests, so bring our own.
    return ContainerType.objects.get_or_create(
        container_type_name="overlap", defaults={"memory_mb": 512, "vcpus": 1, "disk_gib": 1}
    )[0]


def run_concurrently(count: int = 2) -> list[ReconcileReport]:
    barrier = threading.Barrier(count)
    reports: list[ReconcileReport] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            reports.append(reconcile_once())
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return reports


def ops(*names: str) -> Counter[tuple[str, str]]:
    return Counter(
        (node, op)
        for node in names
        for op, _ in InMemoryNodeDriver.node_state(node).calls
        if op in ("vm_create", "vm_start", "vm_stop")
    )


def per_vm(op: str, *names: str) -> Counter[str]:
    return Counter(
        vm for node in names for name, vm in InMemoryNodeDriver.node_state(node).calls if name == op
    )


def test_two_overlapping_runs_create_and_start_each_container_once(user, make_node, container_type):
    nodes = [make_node("a"), make_node("b")]
    for node in nodes:
        InMemoryNodeDriver.set_capacity(node.name, vcpus=1000, mem_mb=1 << 24)
    containers = Container.objects.bulk_create(
        Container(user=user, container_type=container_type, node=nodes[i % 2], name=f"c{i}")
        for i in range(40)
    )

    reports = run_concurrently()

    starts = per_vm("vm_start", "a", "b")
    creates = per_vm("vm_create", "a", "b")
    assert {c.vm_id for c in containers} == set(starts) == set(creates)
    assert set(starts.values()) == {1}
    assert set(creates.values()) == {1}
    assert sum(r.created for r in reports) == 40
    assert Container.objects.filter(status="running").count() == 40
    assert not Container.objects.exclude(claim_token="").exists()


def test_two_overlapping_runs_power_off_each_container_once(user, make_node, container_type):
    node = make_node("a")
    InMemoryNodeDriver.set_capacity("a", vcpus=1000, mem_mb=1 << 24)
    Container.objects.bulk_create(
        Container(user=user, container_type=container_type, node=node, name=f"c{i}")
        for i in range(30)
    )
    reconcile_once()
    Container.objects.update(desired_state="stopped")

    reports = run_concurrently()

    stops = per_vm("vm_suspend", "a")  # power-off suspends where the node can
    assert len(stops) == 30
    assert set(stops.values()) == {1}
    assert sum(r.stopped for r in reports) == 30
    assert Container.objects.filter(status="stopped").count() == 30


def test_two_overlapping_runs_record_each_crash_once(user, make_node, container_type):
    node = make_node("a")
    InMemoryNodeDriver.set_capacity("a", vcpus=1000, mem_mb=1 << 24)
    containers = Container.objects.bulk_create(
        Container(user=user, container_type=container_type, node=node, name=f"c{i}")
        for i in range(20)
    )
    reconcile_once()
    for container in containers:
        InMemoryNodeDriver.crash_vm("a", container.vm_id)

    reports = run_concurrently()

    assert sum(r.errors for r in reports) == 20
    assert set(Container.objects.values_list("reconcile_attempts", flat=True)) == {1}
    assert AuditLog.objects.filter(action="container.error").count() == 20
