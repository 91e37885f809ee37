"""One placement for creation and reconcile: overcommit ratios, disk, the disk floor, isolation."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from vm_manager import services
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.errors import NoNodeAvailable
from vm_manager.models import Container, ContainerType, ResourceQuota
from vm_manager.nodes import node_heartbeat
from vm_manager.placement import Demand, node_candidates, place_containers
from vm_manager.reconciler import reconcile_once

pytestmark = pytest.mark.django_db


@pytest.fixture
def rich_user(user):
    """Credits are not what these tests are about."""
    ResourceQuota.objects.filter(user=user).update(credits=1000)
    return user


def create(user, container_type) -> Container:
    return services.container_create(user=user, container_type_id=container_type.pk)


def test_a_two_vcpu_node_with_cpu_ratio_4_takes_eight_one_vcpu_containers_not_nine(
    rich_user, make_node, container_type
):
    assert container_type.vcpus == 1
    node = make_node("two-cpus", capacity_vcpus=2, capacity_mem_mb=64 * 1024)
    assert node.cpu_allocation_ratio == 4.0

    placed = [create(rich_user, container_type) for _ in range(8)]

    assert {c.node_id for c in placed} == {node.pk}
    with pytest.raises(NoNodeAvailable):
        create(rich_user, container_type)
    assert Container.objects.count() == 8


def test_memory_is_not_overcommitted_by_default(rich_user, make_node, container_type):
    make_node("small-ram", capacity_vcpus=64, capacity_mem_mb=2 * container_type.memory_mb)

    create(rich_user, container_type)
    create(rich_user, container_type)

    with pytest.raises(NoNodeAvailable):
        create(rich_user, container_type)


def test_a_ram_ratio_above_one_overcommits_memory(rich_user, make_node, container_type):
    make_node(
        "small-ram",
        capacity_vcpus=64,
        capacity_mem_mb=container_type.memory_mb,
        ram_allocation_ratio=2.0,
    )

    create(rich_user, container_type)
    create(rich_user, container_type)

    with pytest.raises(NoNodeAvailable):
        create(rich_user, container_type)


def test_disk_of_stopped_containers_counts_toward_placement(
    rich_user, make_node, make_container, container_type
):
    disk_mb = container_type.disk_gib * 1024
    node = make_node("one-disk", capacity_disk_mb=disk_mb, free_disk_mb=disk_mb)
    make_container(rich_user, node=node, desired_state="stopped")

    with pytest.raises(NoNodeAvailable):
        create(rich_user, container_type)


def test_a_node_under_the_free_disk_floor_gets_no_new_containers(
    rich_user, make_node, container_type, settings
):
    settings.NODE_MIN_FREE_DISK_MB = 2048
    make_node("nearly-full", free_disk_mb=2047, capacity_vcpus=64)
    roomy = make_node("roomy", free_disk_mb=2048, capacity_vcpus=1)

    assert create(rich_user, container_type).node == roomy


def test_the_disk_floor_alone_can_refuse_a_container(
    rich_user, make_node, container_type, settings
):
    settings.NODE_MIN_FREE_DISK_MB = 4096
    make_node("nearly-full", free_disk_mb=4000)

    with pytest.raises(NoNodeAvailable):
        create(rich_user, container_type)


def test_a_node_without_guest_isolation_gets_no_new_containers(
    rich_user, make_node, container_type
):
    make_node("open", guest_isolation=False, capacity_vcpus=64)
    isolated = make_node("isolated", capacity_vcpus=1)

    assert create(rich_user, container_type).node == isolated


def test_the_reconciler_places_through_the_same_rules(
    rich_user, make_node, make_container, container_type
):
    make_node("open", guest_isolation=False, capacity_vcpus=64)
    make_node("tcg", kvm_available=False, capacity_vcpus=64)
    kvm = make_node("kvm", kvm_available=True, capacity_vcpus=1)
    InMemoryNodeDriver.set_guest_isolation("open", False)
    InMemoryNodeDriver.node_state("kvm").kvm_available = True
    ContainerType.objects.filter(pk=container_type.pk).update(requires_kvm=True)
    container = make_container(rich_user)

    reconcile_once()

    container.refresh_from_db()
    assert container.node == kvm


def test_a_heartbeat_records_disk_and_guest_isolation(make_node):
    node = make_node("n1", guest_isolation=True, free_disk_mb=0)
    InMemoryNodeDriver.set_disk("n1", capacity_mb=100_000, free_mb=40_000)
    InMemoryNodeDriver.set_guest_isolation("n1", False)

    node_heartbeat()

    node.refresh_from_db()
    assert (node.capacity_disk_mb, node.free_disk_mb, node.guest_isolation) == (
        100_000,
        40_000,
        False,
    )


def test_candidates_offer_capacity_times_ratio_minus_what_is_held(
    user, make_node, make_container, container_type
):
    node = make_node(
        "n1", capacity_vcpus=2, capacity_mem_mb=4096, capacity_disk_mb=20480, free_disk_mb=9999
    )
    make_container(user, node=node)
    make_container(user, node=node, desired_state="stopped")

    [candidate] = node_candidates()

    assert candidate.free_vcpus == 2 * 4.0 - 1
    assert candidate.free_mem_mb == 4096 - container_type.memory_mb
    assert candidate.free_disk_mb == 20480 - 2 * container_type.disk_gib * 1024
    assert (candidate.running, candidate.reported_free_disk_mb) == (1, 9999)


def test_demand_comes_from_the_type(user, container_type):
    ContainerType.objects.filter(pk=container_type.pk).update(requires_kvm=True)
    container = Container(user=user, container_type=ContainerType.objects.get(pk=container_type.pk))

    assert Demand.for_container(container) == Demand(
        vcpus=container_type.vcpus,
        memory_mb=container_type.memory_mb,
        disk_mb=container_type.disk_gib * 1024,
        requires_kvm=True,
    )


def test_placing_takes_the_same_queries_for_one_node_and_for_twenty(
    rich_user, make_node, make_container, container_type
):
    def queries_to_place() -> int:
        container = make_container(rich_user)
        with CaptureQueriesContext(connection) as captured, transaction.atomic():
            [node_id] = place_containers([container])
        assert node_id is not None
        return len([q for q in captured if "SAVEPOINT" not in q["sql"]])

    make_node("first")
    one = queries_to_place()
    for index in range(19):
        make_node(f"more-{index}")

    assert queries_to_place() == one == 2  # lock the node rows, read their room
