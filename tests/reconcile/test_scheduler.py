"""The scheduler is pure: filters, the spec's score, deterministic ties, reservations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vm_manager.placement import Demand, NodeCandidate, Scheduler, rank

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = timedelta(seconds=60)


def candidate(node_id: int, **fields) -> NodeCandidate:
    values = {
        "node_id": node_id,
        "name": f"n{node_id}",
        "arch": "x86_64",
        "kvm_available": False,
        "healthy": True,
        "active": True,
        "heartbeat_at": NOW - timedelta(seconds=5),
        "free_vcpus": 8,
        "free_mem_mb": 8192,
        "running": 0,
        "free_disk_mb": 100_000,
        "reported_free_disk_mb": 100_000,
        "guest_isolation": True,
    }
    values.update(fields)
    return NodeCandidate(**values)


SMALL = Demand(vcpus=1, memory_mb=1024)


@pytest.mark.parametrize(
    ("fields", "demand"),
    [
        ({"healthy": False}, SMALL),
        ({"active": False}, SMALL),
        ({"heartbeat_at": None}, SMALL),
        ({"heartbeat_at": NOW - timedelta(seconds=61)}, SMALL),
        ({"arch": "aarch64"}, SMALL),
        ({"kvm_available": False}, Demand(vcpus=1, memory_mb=1024, requires_kvm=True)),
        ({"free_vcpus": 0}, SMALL),
        ({"free_mem_mb": 1023}, SMALL),
        ({"guest_isolation": False}, SMALL),
        ({"free_disk_mb": 5119}, Demand(vcpus=1, memory_mb=1024, disk_mb=5120)),
        ({"reported_free_disk_mb": 2047}, SMALL),
    ],
)
def test_nodes_that_cannot_take_the_container_are_filtered_out(fields, demand):
    assert rank([candidate(1, **fields)], demand, NOW, TIMEOUT, min_free_disk=2048) == []


def test_a_node_exactly_at_the_disk_floor_still_qualifies():
    at_floor = candidate(1, reported_free_disk_mb=2048)
    assert rank([at_floor], SMALL, NOW, TIMEOUT, min_free_disk=2048) == [at_floor]


def test_a_heartbeat_exactly_at_the_threshold_still_counts_as_fresh():
    fresh = candidate(1, heartbeat_at=NOW - TIMEOUT)
    assert rank([fresh], SMALL, NOW, TIMEOUT) == [fresh]


def test_nodes_are_ranked_by_the_spec_score():
    more_memory = candidate(1, free_mem_mb=16384, free_vcpus=2)
    more_cpus = candidate(2, free_mem_mb=8192, free_vcpus=64)
    busier = candidate(3, free_mem_mb=16384, free_vcpus=2, running=3)

    ranked = rank([more_cpus, busier, more_memory], SMALL, NOW, TIMEOUT)

    assert [c.node_id for c in ranked] == [1, 3, 2]
    assert more_memory.score() == 2 * 16384 + 2


def test_ties_go_to_the_lower_node_id():
    ranked = rank([candidate(7), candidate(3), candidate(5)], SMALL, NOW, TIMEOUT)
    assert [c.node_id for c in ranked] == [3, 5, 7]


def test_placement_reserves_capacity_so_a_batch_never_overcommits():
    scheduler = Scheduler(
        [
            candidate(1, free_vcpus=2, free_mem_mb=2048),
            candidate(2, free_vcpus=1, free_mem_mb=1024),
        ],
        NOW,
        TIMEOUT,
    )

    placed = [scheduler.place(SMALL) for _ in range(4)]

    assert [p.node_id if p else None for p in placed] == [1, 2, 1, None]
    assert all(c.free_vcpus >= 0 and c.free_mem_mb >= 0 for c in scheduler.candidates)
