"""Node health: what a probe records, and a stale heartbeat keeps a node out of placement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container
from vm_manager.nodes import node_heartbeat, parse_agent_url
from vm_manager.placement import Demand, Scheduler, node_candidates

pytestmark = pytest.mark.django_db


def test_a_heartbeat_records_what_the_agent_reports(make_node):
    node = make_node("n1", healthy=False, heartbeat_at=None, last_error="old")
    fake = InMemoryNodeDriver.node_state("n1")
    fake.arch, fake.kvm_available = "aarch64", True
    InMemoryNodeDriver.set_capacity("n1", vcpus=4, mem_mb=7000)

    report = node_heartbeat()

    node.refresh_from_db()
    assert report.healthy == ["n1"]
    assert (node.healthy, node.arch, node.kvm_available) == (True, "aarch64", True)
    assert (node.capacity_vcpus, node.capacity_mem_mb, node.last_error) == (4, 7000, "")
    assert timezone.now() - node.heartbeat_at < timedelta(seconds=5)


def test_an_unreachable_node_is_unhealthy_and_keeps_its_last_heartbeat(make_node):
    before = timezone.now() - timedelta(seconds=30)
    node = make_node("n1", heartbeat_at=before)
    InMemoryNodeDriver.set_reachable("n1", False)

    report = node_heartbeat()

    node.refresh_from_db()
    assert report.unhealthy == {"n1": "node n1 is unreachable"}
    assert (node.healthy, node.heartbeat_at, node.last_error) == (
        False,
        before,
        "node n1 is unreachable",
    )
    assert node.auth_token not in node.last_error


def test_a_node_with_a_stale_heartbeat_gets_no_new_containers(
    user, make_node, make_container, settings, reconcile
):
    settings.NODE_HEARTBEAT_TIMEOUT_SECONDS = 60
    stale = make_node("stale", heartbeat_at=timezone.now() - timedelta(seconds=61))
    container = make_container(user)

    # A dry run does not refresh heartbeats: the stale node is the only one and is skipped.
    report = reconcile(dry_run=True)
    assert "create" in report.plan[0]

    scheduler = Scheduler(node_candidates(), timezone.now(), timedelta(seconds=60))
    assert scheduler.place(Demand(vcpus=1, memory_mb=512)) is None

    # A real pass probes the node first, so it is fresh again and takes the container.
    reconcile()
    container.refresh_from_db()
    assert container.node == stale
    assert Container.objects.get(pk=container.pk).status == "running"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.0.5:8081", ("10.0.0.5", 8081, False)),
        ("https://agent.example.com", ("agent.example.com", 443, True)),
        ("http://[::1]:9000/", ("::1", 9000, False)),
    ],
)
def test_agent_urls_are_split_into_address_port_and_tls(url, expected):
    assert parse_agent_url(url) == expected
