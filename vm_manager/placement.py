"""Where a container runs: one placement for the create path and the reconciler.

Entry points:
- ``Demand.for_container(container)``: what a container asks of a node, built in one place
  (vCPUs, memory, disk, ``requires_kvm``, arch) from the resources its type copied onto it.
- ``place_containers(containers)``: locks every node row (in primary-key order, the one lock
  order), reads their allocations, and hands each container the best node that fits, reserving
  what it hands out so a batch never overcommits. Call it inside a transaction.
- ``Scheduler``, ``NodeCandidate``, ``eligible``, ``rank``: the pure filter and ranking.

Overcommit as Nova does it: a node offers ``capacity * allocation ratio`` of each resource
(``cpu_allocation_ratio`` 4.0, ``ram_allocation_ratio`` 1.0 and ``disk_allocation_ratio`` 1.0
by default, per node). vCPUs and memory are held by containers meant to run; disk by every
container not being deleted, stopped ones included (their disk stays on the node). A node
gets no new containers when it is inactive, unhealthy or silent for longer than
``NODE_HEARTBEAT_TIMEOUT_SECONDS``, when its agent does not report the guest egress policy in
force, or when its data disk has less than ``NODE_MIN_FREE_DISK_MB`` free. Ranking keeps the
spec's score, ``2*free_mem_mb + free_vcpus - 0.5*running``, on what is still allocatable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, IntegerField, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from vm_manager.models import Container, Node, holding_capacity_q, live_q, node_score

DEFAULT_ARCH = "x86_64"
DEFAULT_MIN_FREE_DISK_MB = 2048


def min_free_disk_mb() -> int:
    return int(getattr(settings, "NODE_MIN_FREE_DISK_MB", DEFAULT_MIN_FREE_DISK_MB))


@dataclass(frozen=True)
class Demand:
    vcpus: int
    memory_mb: int
    disk_mb: int = 0
    arch: str = DEFAULT_ARCH
    requires_kvm: bool = False

    @classmethod
    def for_container(cls, container: Container) -> Demand:
        """The container's row holds its type's resources (copied on save); KVM from the type."""
        container.sync_resources_from_type()
        container_type = container.container_type if container.container_type_id else None
        return cls(
            vcpus=container.vcpus,
            memory_mb=container.memory_mb,
            disk_mb=container.disk_gib * 1024,
            requires_kvm=bool(container_type and container_type.requires_kvm),
        )


@dataclass
class NodeCandidate:
    """A node's allocatable room, as read under the placement lock (or built by a test)."""

    node_id: int
    name: str
    arch: str
    kvm_available: bool
    healthy: bool
    active: bool
    heartbeat_at: datetime | None
    free_vcpus: float
    free_mem_mb: float
    running: int
    free_disk_mb: float
    reported_free_disk_mb: int
    guest_isolation: bool

    def score(self) -> float:
        return node_score(self.free_mem_mb, self.free_vcpus, self.running)  # type: ignore[arg-type]


def is_fresh(candidate: NodeCandidate, now: datetime, heartbeat_timeout: timedelta) -> bool:
    return candidate.heartbeat_at is not None and now - candidate.heartbeat_at <= heartbeat_timeout


def eligible(
    candidate: NodeCandidate,
    demand: Demand,
    now: datetime,
    heartbeat_timeout: timedelta,
    min_free_disk: int = 0,
) -> bool:
    return (
        candidate.active
        and candidate.healthy
        and is_fresh(candidate, now, heartbeat_timeout)
        and candidate.guest_isolation
        and candidate.reported_free_disk_mb >= min_free_disk
        and candidate.arch == demand.arch
        and (candidate.kvm_available or not demand.requires_kvm)
        and candidate.free_vcpus >= demand.vcpus
        and candidate.free_mem_mb >= demand.memory_mb
        and candidate.free_disk_mb >= demand.disk_mb
    )


def rank(
    candidates: list[NodeCandidate],
    demand: Demand,
    now: datetime,
    heartbeat_timeout: timedelta,
    min_free_disk: int = 0,
) -> list[NodeCandidate]:
    """Eligible nodes, best first; ties go to the lower node id so the order is stable."""
    fitting = [c for c in candidates if eligible(c, demand, now, heartbeat_timeout, min_free_disk)]
    return sorted(fitting, key=lambda c: (-c.score(), c.node_id))


class Scheduler:
    """Pure: places demands on candidate snapshots, reserving what it hands out."""

    def __init__(
        self,
        candidates: list[NodeCandidate],
        now: datetime,
        heartbeat_timeout: timedelta,
        min_free_disk: int = 0,
    ) -> None:
        self.candidates = candidates
        self.now = now
        self.heartbeat_timeout = heartbeat_timeout
        self.min_free_disk = min_free_disk

    def ranked(self, demand: Demand) -> list[NodeCandidate]:
        return rank(self.candidates, demand, self.now, self.heartbeat_timeout, self.min_free_disk)

    def place(self, demand: Demand) -> NodeCandidate | None:
        ranked = self.ranked(demand)
        if not ranked:
            return None
        chosen = ranked[0]
        chosen.free_vcpus -= demand.vcpus
        chosen.free_mem_mb -= demand.memory_mb
        chosen.free_disk_mb -= demand.disk_mb
        chosen.running += 1
        return chosen


def node_candidates(node_ids: Iterable[int] | None = None) -> list[NodeCandidate]:
    """Every node (or ``node_ids``) with its allocatable room, in one query."""
    holding = holding_capacity_q("containers__")
    live = live_q("containers__")
    nodes = Node.objects.annotate(
        used_vcpus=Coalesce(Sum("containers__vcpus", filter=holding), Value(0)),
        used_mem=Coalesce(Sum("containers__memory_mb", filter=holding), Value(0)),
        used_disk_gib=Coalesce(Sum("containers__disk_gib", filter=live), Value(0)),
        running=Coalesce(
            Count("containers", filter=holding), Value(0), output_field=IntegerField()
        ),
    ).order_by("pk")
    if node_ids is not None:
        nodes = nodes.filter(pk__in=list(node_ids))
    return [
        NodeCandidate(
            node_id=node.pk,
            name=node.name,
            arch=node.arch,
            kvm_available=node.kvm_available,
            healthy=node.healthy,
            active=node.active,
            heartbeat_at=node.heartbeat_at,
            free_vcpus=node.capacity_vcpus * node.cpu_allocation_ratio - node.used_vcpus,
            free_mem_mb=node.capacity_mem_mb * node.ram_allocation_ratio - node.used_mem,
            running=node.running,
            free_disk_mb=node.capacity_disk_mb * node.disk_allocation_ratio
            - node.used_disk_gib * 1024,
            reported_free_disk_mb=node.free_disk_mb,
            guest_isolation=node.guest_isolation,
        )
        for node in nodes
    ]


def placement_refusals(node: Node) -> list[str]:
    """Why a healthy node's own report keeps it out of placement (for operators)."""
    reasons = []
    if not node.guest_isolation:
        reasons.append("its agent reports the guest egress policy is not in force")
    floor = min_free_disk_mb()
    if node.free_disk_mb < floor:
        reasons.append(f"{node.free_disk_mb} MB free on its data disk, under the {floor} MB floor")
    return reasons


def scheduler_for_locked_nodes() -> Scheduler:
    """Lock every node row in primary-key order, then read their room: the one lock scheme.

    Placements serialise on the node rows, so two creates (or a create and a reconcile pass)
    never both take the last room on a node. Callers that also lock a quota take it first.
    """
    list(Node.objects.select_for_update().order_by("pk").values_list("pk", flat=True))
    return Scheduler(
        node_candidates(),
        timezone.now(),
        timedelta(seconds=settings.NODE_HEARTBEAT_TIMEOUT_SECONDS),
        min_free_disk_mb(),
    )


def place_containers(containers: list[Container]) -> list[int | None]:
    """The node id chosen for each container, in order; None where no node fits.

    Writes nothing: the caller records the choice inside the same transaction, so the lock
    taken here still holds when it does.
    """
    if not containers:
        return []
    scheduler = scheduler_for_locked_nodes()
    placed = (scheduler.place(Demand.for_container(c)) for c in containers)
    return [candidate.node_id if candidate else None for candidate in placed]
