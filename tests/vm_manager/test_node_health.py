"""The agent's /health as the web reads it: disk and isolation, never trusted blindly."""

from __future__ import annotations

import pytest

from vm_manager.drivers import NodeError
from vm_manager.drivers.http import parse_health

REPORT = {
    "arch": "x86_64",
    "kvm_available": True,
    "accel": "kvm",
    "capacity_vcpus": 2,
    "capacity_mem_mb": 4096,
    "used_vcpus": 0,
    "used_mem_mb": 0,
    "running_vms": 0,
    "capacity_disk_mb": 100_000,
    "free_disk_mb": 50_000,
    "guest_isolation": True,
    "guest_egress": "public",
    "isolation_detail": "",
}


def test_a_full_health_report_is_read_as_sent():
    health = parse_health(REPORT)

    assert health["free_disk_mb"] == 50_000
    assert health["capacity_disk_mb"] == 100_000
    assert health["guest_isolation"] is True


def test_an_agent_that_does_not_report_isolation_or_disk_counts_as_unsafe_and_full():
    old = {k: v for k, v in REPORT.items() if k not in ("guest_isolation", "free_disk_mb")}

    health = parse_health(old)

    assert health["guest_isolation"] is False
    assert health["free_disk_mb"] == 0


def test_only_a_true_boolean_means_isolated():
    assert parse_health({**REPORT, "guest_isolation": "yes"})["guest_isolation"] is False


@pytest.mark.parametrize(
    "report",
    [[], {**REPORT, "arch": None}, {**REPORT, "free_disk_mb": -1}, {**REPORT, "free_disk_mb": "9"}],
    ids=["not-an-object", "no-arch", "negative-disk", "disk-as-text"],
)
def test_a_malformed_health_report_is_a_node_error(report):
    with pytest.raises(NodeError):
        parse_health(report)
