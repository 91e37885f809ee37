"""Each invariant checker passes on a consistent state and reports the state broken on purpose.

Integration marker: on PostgreSQL, as the load and fault runs use them. The consistent state is
the one the reconciler leaves on the in-memory node; each break is one the faults could cause.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from ai_services.services import ai_turn_begin
from vm_manager.drivers import VMStatus
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.invariants import (
    AIJournal,
    EditorWrite,
    check_acked_writes,
    check_ai_uses,
    check_convergence,
    check_credits,
    check_placement,
    node_listings,
)
from vm_manager.models import Container, ContainerType, Node, ResourceQuota
from vm_manager.reconciler import reconcile_once

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

SETTLED = timedelta(0)


@pytest.fixture
def converged(
    user: User, node: Node, make_container: Callable[..., Container]
) -> tuple[Container, Container]:
    """One container running and one stopped, both made by the reconciler on ``node``."""
    running = make_container(user)
    stopped = make_container(user)
    reconcile_once()
    Container.objects.filter(pk=stopped.pk).update(desired_state=Container.DesiredState.STOPPED)
    reconcile_once()
    running.refresh_from_db()
    stopped.refresh_from_db()
    assert (running.status, stopped.status) == ("running", "stopped")
    return running, stopped


def vm(vm_id: str, state: str = "running") -> VMStatus:
    return VMStatus(
        vm_id=vm_id, state=state, vcpus=1, memory_mb=512, disk_gib=1,  # type: ignore[typeddict-item]
        ssh_ready=state == "running", detail="",
    )  # fmt: skip


# -- placement -------------------------------------------------------------------------------


def test_placement_holds_after_the_reconciler_converged(converged: tuple[Container, ...]) -> None:
    assert check_placement(node_listings()) == []


def test_placement_reports_a_container_its_node_lost(
    converged: tuple[Container, Container], node: Node
) -> None:
    running, _ = converged
    InMemoryNodeDriver.node_state(node.name).vms.pop(running.vm_id)

    found = check_placement(node_listings())

    assert [(v.subject, "lost" in v.detail) for v in found] == [(f"container {running.pk}", True)]


def test_placement_reports_a_vm_on_two_nodes(
    converged: tuple[Container, Container], node: Node, make_node: Callable[..., Node]
) -> None:
    running, _ = converged
    other = make_node("node2")
    listings = node_listings()
    listings[other.pk] = [vm(running.vm_id)]

    found = check_placement(listings)

    assert len(found) == 1
    assert found[0].subject == f"container {running.pk}"
    assert f"node(s) [{other.pk}]" in found[0].detail


def test_placement_reports_a_vm_listed_twice_on_one_node(
    converged: tuple[Container, Container], node: Node
) -> None:
    running, _ = converged
    listings = node_listings()
    listings[node.pk] = [*(listings[node.pk] or []), vm(running.vm_id)]

    assert ["listed 2x" in v.detail for v in check_placement(listings)] == [True]


def test_placement_reports_a_vm_whose_container_is_gone(
    converged: tuple[Container, Container], node: Node
) -> None:
    running, _ = converged
    Container.objects.filter(pk=running.pk).delete()

    found = check_placement(node_listings())

    assert [(v.subject, v.detail.startswith("orphan")) for v in found] == [
        (f"vm {running.vm_id}", True)
    ]


def test_placement_says_nothing_of_a_node_that_did_not_answer(
    converged: tuple[Container, Container], node: Node
) -> None:
    InMemoryNodeDriver.set_reachable(node.name, False)

    assert check_placement(node_listings()) == []


# -- convergence -----------------------------------------------------------------------------


def test_convergence_holds_after_the_reconciler_converged(
    converged: tuple[Container, Container],
) -> None:
    assert check_convergence(node_listings(), grace=SETTLED) == []


def test_convergence_reports_a_crashed_vm_the_row_still_calls_running(
    converged: tuple[Container, Container], node: Node
) -> None:
    running, _ = converged
    InMemoryNodeDriver.crash_vm(node.name, running.vm_id)

    found = check_convergence(node_listings(), grace=SETTLED)

    assert [(v.subject, v.detail) for v in found] == [
        (f"container {running.pk}", f"running but its VM is error on node {node.pk}")
    ]


def test_convergence_reports_an_intent_not_acted_on(
    converged: tuple[Container, Container],
) -> None:
    running, _ = converged
    Container.objects.filter(pk=running.pk).update(desired_state=Container.DesiredState.STOPPED)

    found = check_convergence(node_listings(), grace=SETTLED)

    assert [v.detail for v in found] == ["wants stopped, is running"]


def test_convergence_reports_a_deleted_container_whose_row_remains(
    converged: tuple[Container, Container],
) -> None:
    _, stopped = converged
    Container.objects.filter(pk=stopped.pk).update(deleted_at=timezone.now())

    found = check_convergence(node_listings(), grace=SETTLED)

    assert [v.detail for v in found] == ["deletion requested, row remains"]


def test_convergence_leaves_rows_changed_within_the_grace_alone(
    converged: tuple[Container, Container],
) -> None:
    running, _ = converged
    Container.objects.filter(pk=running.pk).update(
        desired_state=Container.DesiredState.STOPPED, updated_at=timezone.now()
    )

    assert check_convergence(node_listings(), grace=timedelta(seconds=30)) == []


# -- credits ---------------------------------------------------------------------------------


def test_credits_hold_for_containers_made_through_the_rules(
    converged: tuple[Container, Container],
) -> None:
    assert check_credits() == []


def test_credits_report_an_overspend_that_slipped_past_the_quota(
    user: User, make_container: Callable[..., Container], container_type: ContainerType
) -> None:
    quota = ResourceQuota.objects.get(user=user)
    for _ in range(quota.credits // container_type.credits_cost + 1):
        make_container(user)  # straight to the table: no quota check

    found = check_credits()

    assert [v.subject for v in found] == [f"user {user.pk}"]
    assert "credits" in found[0].detail and f"of {quota.credits}" in found[0].detail


# -- AI uses ---------------------------------------------------------------------------------


def test_ai_uses_hold_when_every_answer_has_its_row(
    user: User, converged: tuple[Container, Container]
) -> None:
    since = timezone.now() - timedelta(seconds=1)
    running, _ = converged
    ai_turn_begin(user, running.pk, "hello")
    ai_turn_begin(user, running.pk, "again")

    assert check_ai_uses({user.pk: AIJournal(asked=3, answered=2)}, since) == []


def test_ai_uses_report_an_answer_without_a_row(
    user: User, converged: tuple[Container, Container]
) -> None:
    since = timezone.now() - timedelta(seconds=1)
    running, _ = converged
    ai_turn_begin(user, running.pk, "hello")

    found = check_ai_uses({user.pk: AIJournal(asked=2, answered=2)}, since)

    assert [v.detail for v in found] == ["lost: 2 answered, 1 rows"]


def test_ai_uses_report_more_rows_than_asks(
    user: User, other_user: User, converged: tuple[Container, Container]
) -> None:
    since = timezone.now() - timedelta(seconds=1)
    running, _ = converged
    ai_turn_begin(user, running.pk, "hello")
    ai_turn_begin(user, running.pk, "hello")

    found = check_ai_uses({user.pk: AIJournal(asked=1, answered=1)}, since)

    assert [v.detail for v in found] == ["double-counted: 1 asked, 2 rows"]


# -- acknowledged editor writes --------------------------------------------------------------


def writes(*entries: tuple[bytes, bool]) -> list[EditorWrite]:
    return [EditorWrite(7, "/app/main.py", content, acked) for content, acked in entries]


def test_acked_writes_hold_when_the_file_has_the_last_acked_content() -> None:
    journal = writes((b"one", True), (b"two", True))

    assert check_acked_writes(journal, {(7, "/app/main.py"): b"two"}) == []


def test_acked_writes_accept_a_later_write_whose_ack_was_lost() -> None:
    journal = writes((b"one", True), (b"two", False))

    assert check_acked_writes(journal, {(7, "/app/main.py"): b"two"}) == []


def test_acked_writes_report_a_file_back_at_an_older_content() -> None:
    journal = writes((b"one", True), (b"two", True))

    found = check_acked_writes(journal, {(7, "/app/main.py"): b"one"})

    assert [v.detail for v in found] == [
        "acked write 2 of 2 lost: file is 3 bytes of other content"
    ]


def test_acked_writes_report_a_missing_file() -> None:
    found = check_acked_writes(writes((b"one", True)), {(7, "/app/main.py"): None})

    assert [v.detail for v in found] == ["acked write 1 of 1 lost: file is missing"]


def test_acked_writes_read_through_a_node_driver(
    converged: tuple[Container, Container], node: Node
) -> None:
    from asgiref.sync import async_to_sync

    from vm_manager.drivers import get_node_driver

    running, _ = converged
    driver = get_node_driver(node)
    async_to_sync(driver.write_file)(running.vm_id, "/app/a.txt", b"acked")
    current = {
        (running.pk, "/app/a.txt"): async_to_sync(driver.read_file)(running.vm_id, "/app/a.txt")
    }

    assert (
        check_acked_writes([EditorWrite(running.pk, "/app/a.txt", b"acked", True)], current) == []
    )
