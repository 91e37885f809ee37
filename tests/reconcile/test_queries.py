"""A no-op pass costs the same number of queries for 10 and for 200 containers."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container

pytestmark = pytest.mark.django_db


def converged_noop_queries(count, user, make_node, container_type, reconcile) -> int:
    nodes = [make_node(f"q{count}-{i}") for i in range(3)]
    for node in nodes:
        InMemoryNodeDriver.set_capacity(node.name, vcpus=512, mem_mb=1 << 20)
    Container.objects.bulk_create(
        Container(
            user=user,
            container_type=container_type,
            node=nodes[i % 3],
            desired_state="running" if i % 2 else "stopped",
            name=f"c{i}",
        )
        for i in range(count)
    )
    first = reconcile()
    assert first.errors == 0
    assert first.created == count // 2
    with CaptureQueriesContext(connection) as queries:
        report = reconcile()
    assert (report.examined, report.started, report.stopped, report.created) == (count, 0, 0, 0)
    Container.objects.all().delete()
    return len(queries)


def test_a_noop_pass_has_a_query_count_independent_of_the_containers(
    user, make_node, container_type, reconcile
):
    small = converged_noop_queries(10, user, make_node, container_type, reconcile)
    large = converged_noop_queries(200, user, make_node, container_type, reconcile)

    assert small == large
    assert small <= 4


def test_a_noop_pass_is_four_queries_for_10_and_for_200_containers(
    user, make_node, container_type, reconcile, django_assert_num_queries
):
    for count in (10, 200):
        node = make_node(f"n{count}")
        InMemoryNodeDriver.set_capacity(node.name, vcpus=10_000, mem_mb=1 << 24)
        Container.objects.bulk_create(
            Container(user=user, container_type=container_type, node=node, name=f"c{i}")
            for i in range(count)
        )
        reconcile()
        # The containers, the nodes, and one UPDATE recording every node's heartbeat after
        # locking their rows in placement's order.
        with django_assert_num_queries(4):
            reconcile()
        Container.objects.all().delete()
