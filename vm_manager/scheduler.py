"""Where a container runs: filter nodes, then rank them by the spec's score.

Pure: it works on ``NodeCandidate`` snapshots, never the database, so it is cheap to test and
to run for a batch. ``Scheduler.place`` reserves the capacity it hands out, so a batch of
placements can never overcommit a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vm_manager.models import node_score


@dataclass(frozen=True)
class Demand:
    vcpus: int
    memory_mb: int
    arch: str = "x86_64"
    requires_kvm: bool = False


@dataclass
class NodeCandidate:
    node_id: int
    name: str
    arch: str
    kvm_available: bool
    healthy: bool
    active: bool
    heartbeat_at: datetime | None
    free_vcpus: int
    free_mem_mb: int
    running: int

    def score(self) -> float:
        return node_score(self.free_mem_mb, self.free_vcpus, self.running)


def is_fresh(candidate: NodeCandidate, now: datetime, heartbeat_timeout: timedelta) -> bool:
    return candidate.heartbeat_at is not None and now - candidate.heartbeat_at <= heartbeat_timeout


def eligible(
    candidate: NodeCandidate, demand: Demand, now: datetime, heartbeat_timeout: timedelta
) -> bool:
    return (
        candidate.active
        and candidate.healthy
        and is_fresh(candidate, now, heartbeat_timeout)
        and candidate.arch == demand.arch
        and (candidate.kvm_available or not demand.requires_kvm)
        and candidate.free_vcpus >= demand.vcpus
        and candidate.free_mem_mb >= demand.memory_mb
    )


def rank(
    candidates: list[NodeCandidate], demand: Demand, now: datetime, heartbeat_timeout: timedelta
) -> list[NodeCandidate]:
    """Eligible nodes, best first; ties go to the lower node id so the order is stable."""
    fitting = [c for c in candidates if eligible(c, demand, now, heartbeat_timeout)]
    return sorted(fitting, key=lambda c: (-c.score(), c.node_id))


class Scheduler:
    def __init__(
        self, candidates: list[NodeCandidate], now: datetime, heartbeat_timeout: timedelta
    ) -> None:
        self.candidates = candidates
        self.now = now
        self.heartbeat_timeout = heartbeat_timeout

    def ranked(self, demand: Demand) -> list[NodeCandidate]:
        return rank(self.candidates, demand, self.now, self.heartbeat_timeout)

    def place(self, demand: Demand) -> NodeCandidate | None:
        ranked = self.ranked(demand)
        if not ranked:
            return None
        chosen = ranked[0]
        chosen.free_vcpus -= demand.vcpus
        chosen.free_mem_mb -= demand.memory_mb
        chosen.running += 1
        return chosen
