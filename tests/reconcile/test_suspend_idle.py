"""Power-off suspends, power-on resumes, and idle containers are suspended by the reconciler
(in-memory node; time is the rows' timestamps, never a sleep)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from internal_config.models import AuditLog, Config
from internal_config.services import config_set
from tests.support.reconcile import calls, vm_state
from vm_manager import services
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.guest import commands
from vm_manager.idle import IDLE_REASON, container_touch
from vm_manager.models import Container

S = Container.Status
D = Container.DesiredState


def running(make_container, user, node, reconcile) -> Container:
    container = make_container(user, node=node)
    reconcile()
    container.refresh_from_db()
    assert container.status == S.RUNNING
    return container


def idle_for(container: Container, minutes: float) -> None:
    Container.objects.filter(pk=container.pk).update(
        last_active_at=timezone.now() - timedelta(minutes=minutes)
    )


def fake_vm(container: Container):
    return InMemoryNodeDriver.node_state("node1").vms[container.vm_id]


# -- power-off and power-on ---------------------------------------------------------------


def test_power_off_suspends_the_vm_when_the_node_can(user, node, make_container, reconcile):
    container = running(make_container, user, node, reconcile)
    services.container_power_off(container)

    report = reconcile()

    container.refresh_from_db()
    assert report.stopped == 1
    assert calls("node1", "vm_suspend") == [container.vm_id]
    assert calls("node1", "vm_stop") == []
    assert (container.status, container.suspended) == (S.STOPPED, True)
    assert vm_state("node1", container) == "stopped"
    assert AuditLog.objects.filter(action="container.power_off", success=True).exists()


def test_power_off_is_a_hard_stop_when_the_node_cannot_suspend(
    user, node, make_container, reconcile
):
    container = running(make_container, user, node, reconcile)
    InMemoryNodeDriver.set_suspend_supported("node1", False)
    services.container_power_off(container)

    report = reconcile()

    container.refresh_from_db()
    assert report.stopped == 1 and report.errors == 0
    assert calls("node1", "vm_stop") == [container.vm_id]
    assert (container.status, container.suspended) == (S.STOPPED, False)
    assert fake_vm(container).suspended is False


def test_power_on_after_a_suspend_resumes_and_says_so(user, node, make_container, reconcile):
    container = running(make_container, user, node, reconcile)
    services.container_power_off(container)
    reconcile()
    services.container_power_on(container)

    reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert (container.suspended, container.last_boot) == (False, "restored")


def test_power_on_after_a_hard_stop_is_a_cold_boot(user, node, make_container, reconcile):
    container = running(make_container, user, node, reconcile)
    InMemoryNodeDriver.set_suspend_supported("node1", False)
    services.container_power_off(container)
    reconcile()
    services.container_power_on(container)

    reconcile()

    container.refresh_from_db()
    assert (container.status, container.last_boot) == (S.RUNNING, "cold")


def test_restart_stays_a_hard_stop(user, node, make_container, reconcile):
    container = running(make_container, user, node, reconcile)

    commands.container_restart(container)

    assert calls("node1", "vm_stop") == [container.vm_id]
    assert calls("node1", "vm_suspend") == []


# -- idle auto-stop ----------------------------------------------------------------------------


def test_the_idle_policy_is_a_config_row_defaulting_to_30_minutes(db):
    assert Config.objects.get(name="idle_suspend_minutes").value == "30"


def test_a_container_idle_for_the_configured_minutes_is_suspended(
    user, node, make_container, reconcile
):
    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 11)

    report = reconcile()

    container.refresh_from_db()
    assert report.suspended_idle == 1
    assert calls("node1", "vm_suspend") == [container.vm_id]
    assert fake_vm(container).suspended is True
    assert container.idle_suspended is True
    assert (container.status, container.status_reason) == (S.STOPPED, IDLE_REASON)
    # It keeps its intent, so its credits and its place: the resume is never refused.
    assert container.desired_state == D.RUNNING
    assert AuditLog.objects.filter(action="container.idle_suspend", success=True).exists()


def test_a_container_used_within_the_minutes_keeps_running(user, node, make_container, reconcile):
    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 9)

    reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert calls("node1", "vm_suspend") == []


def test_a_fresh_container_never_used_counts_from_its_start(user, node, make_container, reconcile):
    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    assert container.last_active_at is None

    reconcile()
    Container.objects.filter(pk=container.pk).update(
        status_changed_at=timezone.now() - timedelta(minutes=11)
    )
    reconcile()

    container.refresh_from_db()
    assert container.idle_suspended is True


def test_a_one_minute_policy_still_spares_a_socket_refreshed_90_seconds_ago(
    user, node, make_container, reconcile
):
    config_set("idle_suspend_minutes", "1")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 1.5)

    reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING


def test_zero_minutes_never_suspends(user, node, make_container, reconcile):
    config_set("idle_suspend_minutes", "0")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 60 * 24 * 30)

    reconcile()

    container.refresh_from_db()
    assert container.status == S.RUNNING
    assert container.idle_suspended is False
    assert calls("node1", "vm_suspend") == []


def test_an_idle_suspended_container_stays_suspended_across_passes(
    user, node, make_container, reconcile
):
    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 11)
    reconcile()

    report = reconcile()

    assert report.started == 0 and report.created == 0
    assert vm_state("node1", container) == "stopped"


def test_use_between_the_plan_and_the_claim_wins(user, node, make_container, reconcile):
    """The flag is a conditional UPDATE: a touch that lands after the plan read the row
    keeps the container running."""
    from vm_manager import reconciler

    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 11)
    real_claim = reconciler._claim

    def claim_after_a_touch(ids, token, now):
        Container.objects.filter(pk=container.pk).update(last_active_at=timezone.now())
        return real_claim(ids, token, now)

    reconciler._claim = claim_after_a_touch
    try:
        reconcile()
    finally:
        reconciler._claim = real_claim

    container.refresh_from_db()
    assert (container.status, container.idle_suspended) == (S.RUNNING, False)
    assert calls("node1", "vm_suspend") == []


def test_an_api_use_resumes_an_idle_suspended_container(user, node, make_container, reconcile):
    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 11)
    reconcile()
    container.refresh_from_db()

    result = commands.container_exec(container, "echo back")

    container.refresh_from_db()
    assert result["exit_code"] == 0 and "back" in result["stdout"]
    assert (container.status, container.idle_suspended) == (S.RUNNING, False)
    assert container.last_boot == "restored"


def test_power_off_of_an_idle_suspended_container_keeps_it_off(
    user, node, make_container, reconcile
):
    config_set("idle_suspend_minutes", "10")
    container = running(make_container, user, node, reconcile)
    idle_for(container, 11)
    reconcile()
    services.container_power_off(container)

    reconcile()

    container.refresh_from_db()
    assert (container.desired_state, container.idle_suspended) == (D.STOPPED, False)
    assert (container.status, container.status_reason) == (S.STOPPED, "")
    assert vm_state("node1", container) == "stopped"


def test_activity_is_written_at_most_once_a_minute(
    user, node, make_container, django_assert_num_queries
):
    container = make_container(user, node=node)
    with django_assert_num_queries(1):
        container_touch(container)
    with django_assert_num_queries(0):
        container_touch(container)
        container_touch(container, timezone.now() + timedelta(seconds=59))
    with django_assert_num_queries(1):
        container_touch(container, timezone.now() + timedelta(seconds=61))


def test_an_idle_pass_has_a_query_count_independent_of_the_containers(
    user, node, make_container, reconcile
):
    config_set("idle_suspend_minutes", "10")
    counts = []
    for how_many in (3, 12):
        Container.objects.all().delete()
        containers = [make_container(user, node=node) for _ in range(how_many)]
        reconcile()
        for container in containers:
            idle_for(container, 11)
        reconcile()  # suspends them all
        with CaptureQueriesContext(connection) as noop:
            reconcile()  # every one idle-suspended: nothing to do
        counts.append(len(noop.captured_queries))
    assert counts[0] == counts[1] <= 4
