"""Every transition of a container's VM, against the in-memory node."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from internal_config.models import AuditLog
from tests.support.reconcile import calls, vm_state
from vm_manager import services
from vm_manager.drivers import NodeBadRequest, get_node_driver
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container
from vm_manager.reconciler import BACKOFF_CAP_SECONDS, backoff_seconds

S = Container.Status
pytestmark = pytest.mark.django_db


def test_a_new_container_is_created_started_and_running(user, node, make_container, reconcile):
    container = make_container(user, node=node)

    report = reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert vm_state("node1", container) == "running"
    assert (report.examined, report.created, report.errors) == (1, 1, 0)
    log = AuditLog.objects.get(action="container.create")
    assert (log.user, log.target_id, log.success, log.ip) == (user, str(container.pk), True, None)


def test_an_unplaced_container_is_placed_on_the_best_node(
    user, make_node, make_container, reconcile
):
    make_node("small-node")
    big = make_node("big-node")
    InMemoryNodeDriver.set_capacity("small-node", vcpus=2, mem_mb=2048)
    InMemoryNodeDriver.set_capacity("big-node", vcpus=16, mem_mb=65536)
    container = make_container(user)

    reconcile()

    container.refresh_from_db()
    assert container.node == big
    assert container.status == S.RUNNING
    assert vm_state("big-node", container) == "running"


def test_a_batch_of_placements_never_overcommits_a_node(
    user, make_node, make_container, container_type, reconcile
):
    make_node("tiny")
    InMemoryNodeDriver.set_capacity(
        "tiny", vcpus=container_type.vcpus, mem_mb=container_type.memory_mb
    )
    first, second = make_container(user), make_container(user)

    report = reconcile()

    placed = Container.objects.filter(node__isnull=False).count()
    assert placed == 1
    assert report.created == 1
    waiting = Container.objects.get(node__isnull=True)
    assert waiting.pk in (first.pk, second.pk)
    assert waiting.status_reason == "no node has room for it"


def test_a_stopped_vm_of_a_running_container_is_started(user, node, make_container, reconcile):
    container = make_container(user, node=node)
    reconcile()
    InMemoryNodeDriver.node_state("node1").vms[container.vm_id].state = "stopped"

    report = reconcile()

    assert report.started == 1
    assert vm_state("node1", container) == "running"
    assert AuditLog.objects.filter(action="container.power_on", success=True).count() == 1


def test_desired_stopped_stops_the_vm_gracefully(user, node, make_container, reconcile):
    """On a node that cannot suspend (test_suspend_idle covers the one that can)."""
    container = make_container(user, node=node)
    reconcile()
    InMemoryNodeDriver.set_suspend_supported("node1", False)
    services.container_power_off(container)

    report = reconcile()

    container.refresh_from_db()
    assert report.stopped == 1
    assert container.status == S.STOPPED
    assert vm_state("node1", container) == "stopped"
    assert calls("node1", "vm_stop") == [container.vm_id]
    assert AuditLog.objects.filter(action="container.power_off", success=True).exists()


def test_a_crashed_vm_is_an_error_then_retried_after_backoff(user, node, make_container, reconcile):
    container = make_container(user, node=node)
    reconcile()
    InMemoryNodeDriver.crash_vm("node1", container.vm_id)

    report = reconcile()

    container.refresh_from_db()
    assert report.errors == 1
    assert container.status == S.ERROR
    assert container.reconcile_attempts == 1
    assert "qemu process exited" in container.last_error
    assert container.next_attempt_at > timezone.now()
    assert AuditLog.objects.filter(action="container.error", success=False).exists()

    reconcile()  # still backing off: nothing happens
    assert vm_state("node1", container) == "error"

    Container.objects.filter(pk=container.pk).update(next_attempt_at=timezone.now())
    reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert container.reconcile_attempts == 0
    assert vm_state("node1", container) == "running"


def test_a_vanished_vm_is_an_error_then_recreated(user, node, make_container, reconcile):
    container = make_container(user, node=node)
    reconcile()
    InMemoryNodeDriver.node_state("node1").vms.pop(container.vm_id)

    reconcile()
    container.refresh_from_db()
    assert (container.status, container.last_error) == (S.ERROR, "VM missing")

    reconcile(container.pk)  # a targeted reconcile does not wait for the backoff

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert vm_state("node1", container) == "running"


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff_seconds(50) == BACKOFF_CAP_SECONDS


def test_a_node_going_down_keeps_its_containers_and_they_recover(
    user, node, make_container, reconcile
):
    running = make_container(user, node=node)
    stopped = make_container(user, node=node, desired_state="stopped")
    reconcile()
    InMemoryNodeDriver.set_reachable("node1", False)

    report = reconcile()

    node.refresh_from_db()
    assert not node.healthy
    assert "unreachable" in node.last_error
    assert "node1" in report.unhealthy_nodes
    for container, desired in ((running, "running"), (stopped, "stopped")):
        container.refresh_from_db()
        assert container.node == node
        assert container.desired_state == desired
        assert container.status == S.ERROR
        assert container.status_reason.startswith("node unreachable")
        assert container.reconcile_attempts == 0

    InMemoryNodeDriver.set_reachable("node1", True)
    reconcile()

    node.refresh_from_db()
    running.refresh_from_db()
    stopped.refresh_from_db()
    assert node.healthy and node.last_error == ""
    assert (running.status, running.status_reason) == (S.RUNNING, "")
    assert stopped.status == S.STOPPED
    assert vm_state("node1", running) == "running"


def test_a_deleted_container_loses_its_vm_and_its_row(user, node, make_container, reconcile):
    container = make_container(user, node=node)
    reconcile()
    services.container_request_delete(container)

    report = reconcile()

    assert report.deleted == 1
    assert not Container.objects.filter(pk=container.pk).exists()
    assert vm_state("node1", container) is None
    assert AuditLog.objects.filter(
        action="container.destroy", target_id=str(container.pk), user=user
    ).exists()


def test_a_deleted_container_on_a_down_node_waits_for_the_node(
    user, node, make_container, reconcile
):
    container = make_container(user, node=node)
    reconcile()
    services.container_request_delete(container)
    InMemoryNodeDriver.set_reachable("node1", False)

    reconcile()
    assert Container.objects.filter(pk=container.pk).exists()

    InMemoryNodeDriver.set_reachable("node1", True)
    reconcile()
    assert not Container.objects.filter(pk=container.pk).exists()
    assert vm_state("node1", container) is None


def test_a_deactivated_quota_stops_every_vm(user, node, make_container, reconcile):
    containers = [make_container(user, node=node) for _ in range(3)]
    reconcile()

    user.quota.active = False
    user.quota.save()
    reconcile()

    for container in containers:
        container.refresh_from_db()
        assert (container.desired_state, container.status) == ("stopped", S.STOPPED)
        assert vm_state("node1", container) == "stopped"


def test_a_targeted_reconcile_touches_only_its_containers(user, node, make_container, reconcile):
    mine, other = make_container(user, node=node), make_container(user, node=node)

    report = reconcile(mine.pk)

    assert report.examined == 1
    assert vm_state("node1", mine) == "running"
    assert vm_state("node1", other) is None


def test_a_dry_run_prints_the_plan_and_changes_nothing(user, node, make_container, reconcile):
    container = make_container(user, node=node)
    node.healthy = False
    node.save(update_fields=["healthy"])

    report = reconcile(dry_run=True)

    assert len(report.plan) == 1 and "create" in report.plan[0]
    container.refresh_from_db()
    node.refresh_from_db()
    assert container.status == S.CREATED
    assert not node.healthy
    assert vm_state("node1", container) is None


def test_a_claimed_container_is_left_to_the_run_holding_it(user, node, make_container, reconcile):
    container = make_container(user, node=node)
    Container.objects.filter(pk=container.pk).update(
        claim_token="other-run", claimed_until=timezone.now() + timedelta(minutes=5)
    )

    report = reconcile()

    assert report.skipped_claimed == 1
    assert vm_state("node1", container) is None


def test_a_killed_runs_claim_expires_and_the_next_run_converges(
    user, node, make_container, reconcile
):
    container = make_container(user, node=node)
    Container.objects.filter(pk=container.pk).update(
        claim_token="killed-run", claimed_until=timezone.now() - timedelta(seconds=1)
    )

    reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert (container.claim_token, container.claimed_until) == ("", None)


def test_a_run_killed_after_starting_a_vm_is_converged_by_the_next(
    user, node, make_container, reconcile
):
    container = make_container(user, node=node)
    # What a run killed between the node call and the status write leaves behind.
    reconcile(dry_run=True)
    InMemoryNodeDriver.node_state("node1").vms.clear()
    driver = get_node_driver(node)
    async_to_sync(driver.vm_create)(
        {"vm_id": container.vm_id, "vcpus": 1, "memory_mb": 512, "disk_gib": 1, "image": "x"}
    )
    async_to_sync(driver.vm_start)(container.vm_id)
    Container.objects.filter(pk=container.pk).update(
        claim_token="killed", claimed_until=timezone.now() - timedelta(seconds=1)
    )

    report = reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert report.created == report.started == 0
    assert calls("node1", "vm_start") == [container.vm_id]


def test_a_failing_start_is_recorded_not_raised(user, node, make_container, reconcile, monkeypatch):
    container = make_container(user, node=node)

    async def refuse(self, vm_id):  # what the agent answers when QEMU cannot start
        raise NodeBadRequest("not enough memory on the node")

    monkeypatch.setattr(InMemoryNodeDriver, "vm_start", refuse)
    report = reconcile()

    container.refresh_from_db()
    assert report.errors == 1
    assert container.status == S.ERROR
    assert container.last_error == "not enough memory on the node"
    assert container.reconcile_attempts == 1
    assert AuditLog.objects.filter(action="container.create", success=False).exists()
