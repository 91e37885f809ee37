"""Invariant checkers for load, soak and fault runs: each returns the violations it found.

Entry points: ``check_placement``, ``check_convergence``, ``check_credits``,
``check_ai_uses``, ``check_acked_writes``, and ``node_listings`` (what every node reports,
the input of the first two).

Each checker reads the database as it is now and compares it with what it is given (the nodes'
VM listings, a client's journal); none writes. An empty list means the invariant holds. They
are functions rather than tests so a benchmark can call them after a fault (polling
``check_convergence`` until it passes gives the recovery time) and a test can call them on a
state broken on purpose.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.db.models import Count
from django.utils import timezone

from internal_config.models import AIUsageLog
from vm_manager.drivers import VMStatus
from vm_manager.models import Container, Node, ResourceQuota
from vm_manager.nodes import node_probe

S = Container.Status
D = Container.DesiredState
VM_PREFIX = "pq-"

# node pk -> that node's VMs; None when the node did not answer.
Listings = Mapping[int, list[VMStatus] | None]


@dataclass(frozen=True)
class Violation:
    invariant: str  # placement, convergence, credits, ai_uses, acked_writes
    subject: str  # what is wrong: "container 12", "user 3", "vm pq-... on node 2"
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


def node_listings(nodes: Iterable[Node] | None = None) -> dict[int, list[VMStatus] | None]:
    """Every node's VM listing, probed concurrently; a node that does not answer maps to None."""
    chosen = list(Node.objects.all() if nodes is None else nodes)
    probes = async_to_sync(node_probe)(chosen)
    return {
        pk: (list(probe.vms.values()) if probe.vms is not None else None)
        for pk, probe in probes.items()
    }


def check_placement(listings: Listings) -> list[Violation]:
    """No container lost or duplicated on any node, and no VM left without its container.

    Lost: a live container whose row says its VM runs (status running: its node reported it
    running at the last pass) missing from its node's listing. A stopped container may never
    have had a VM (stopped before the reconciler made one), so its absence proves nothing.
    Duplicated: one VM id listed twice, or on a node other than its container's. Orphan: a
    ``pq-`` VM whose container row is gone. Nodes that did not answer are skipped (nothing can
    be said about them).
    """
    violations: list[Violation] = []
    where: dict[str, list[int]] = defaultdict(list)
    for node_id, vms in listings.items():
        for vm in vms or ():
            where[vm["vm_id"]].append(node_id)
    rows = Container.objects.values_list("pk", "instance_id", "node_id", "status", "deleted_at")
    known: set[str] = set()
    for pk, instance_id, node_id, status, deleted_at in rows:
        vm_id = f"{VM_PREFIX}{instance_id}"
        known.add(vm_id)
        nodes = where.get(vm_id, [])
        for node, count in Counter(nodes).items():
            if count > 1:
                violations.append(
                    Violation(
                        "placement", f"container {pk}", f"{vm_id} listed {count}x on node {node}"
                    )
                )
        strays = sorted({n for n in nodes if n != node_id})
        if strays:
            violations.append(
                Violation(
                    "placement",
                    f"container {pk}",
                    f"{vm_id} on node(s) {strays}, placed on node {node_id}",
                )
            )
        placed_answered = node_id is not None and listings.get(node_id) is not None
        if placed_answered and status == S.RUNNING and deleted_at is None and node_id not in nodes:
            violations.append(
                Violation(
                    "placement",
                    f"container {pk}",
                    f"lost: status {status} but node {node_id} does not list {vm_id}",
                )
            )
    for vm_id, nodes in sorted(where.items()):
        if vm_id.startswith(VM_PREFIX) and vm_id not in known:
            violations.append(
                Violation("placement", f"vm {vm_id}", f"orphan on node(s) {sorted(set(nodes))}")
            )
    return violations


def check_convergence(
    listings: Listings, *, grace: timedelta, now: datetime | None = None
) -> list[Violation]:
    """Every container whose row has not changed for ``grace`` is where its intent says.

    Desired running: status running and its node lists the VM running. Desired stopped:
    status stopped and no node lists it running. Deletion requested: the row and the VM are
    gone. Rows touched within ``grace`` (an intent changed, a pass is under way) are not judged
    yet; a fault run polls this until it is empty, which is its recovery time.
    """
    now = now or timezone.now()
    settled = now - grace
    states: dict[str, tuple[int, str]] = {}
    for node_id, vms in listings.items():
        for vm in vms or ():
            states[vm["vm_id"]] = (node_id, vm["state"])
    violations: list[Violation] = []
    rows = Container.objects.filter(updated_at__lte=settled).values_list(
        "pk", "instance_id", "node_id", "desired_state", "status", "deleted_at"
    )
    for pk, instance_id, node_id, desired, status, deleted_at in rows:
        vm_id = f"{VM_PREFIX}{instance_id}"
        node_state = states.get(vm_id)
        subject = f"container {pk}"
        if deleted_at is not None:
            violations.append(Violation("convergence", subject, "deletion requested, row remains"))
        elif desired == D.RUNNING:
            if status != S.RUNNING:
                violations.append(Violation("convergence", subject, f"wants running, is {status}"))
            elif node_state != (node_id, "running"):
                seen = (
                    "not listed"
                    if node_state is None
                    else f"{node_state[1]} on node {node_state[0]}"
                )
                violations.append(
                    Violation("convergence", subject, f"running but its VM is {seen}")
                )
        else:
            if status != S.STOPPED:
                violations.append(Violation("convergence", subject, f"wants stopped, is {status}"))
            elif node_state is not None and node_state[1] == "running":
                violations.append(Violation("convergence", subject, "stopped but its VM runs"))
    live = {f"{VM_PREFIX}{i}" for i in Container.objects.values_list("instance_id", flat=True)}
    for vm_id, (node_id, _) in states.items():
        if vm_id.startswith(VM_PREFIX) and vm_id not in live:
            violations.append(
                Violation("convergence", f"vm {vm_id}", f"still on node {node_id} without a row")
            )
    return violations


def check_credits() -> list[Violation]:
    """Per quota: the credit rule's SQL sum equals the per-container sum, and fits the credits.

    The rule (``ResourceQuota.calculate_used_credits``): containers meant to run and not being
    deleted hold their type's ``credits_cost`` (1 without a type). Recomputed here row by row
    so a change to either side is caught; an overspend (used > credits) means a create or a
    power-on slipped past the quota lock.
    """
    held: Counter[int] = Counter()
    for user_id, cost in Container.objects.filter(
        desired_state=D.RUNNING, deleted_at__isnull=True
    ).values_list("user_id", "container_type__credits_cost"):
        held[user_id] += 1 if cost is None else cost
    violations: list[Violation] = []
    for quota in ResourceQuota.objects.select_related("user"):
        used = quota.calculate_used_credits()
        subject = f"user {quota.user_id}"
        if used != held[quota.user_id]:
            violations.append(
                Violation(
                    "credits", subject, f"rule says {used}, containers sum to {held[quota.user_id]}"
                )
            )
        if used > quota.credits:
            violations.append(
                Violation("credits", subject, f"uses {used} of {quota.credits} credits")
            )
    return violations


@dataclass
class AIJournal:
    """What one client saw of its AI turns: asks sent and complete answers received."""

    asked: int = 0
    answered: int = 0


def check_ai_uses(journal: Mapping[int, AIJournal], since: datetime) -> list[Violation]:
    """No AI use lost or double-counted: per user, answered <= usage rows since ``since`` <= asked.

    Each answered turn must have its AIUsageLog row (the daily counter counts those rows), and
    no ask may leave more than one row; an ask without an answer may or may not leave one
    (a turn aborted after the provider streamed stays spent). Rows of users not in the journal
    are double counts too.
    """
    counts = dict(
        AIUsageLog.objects.filter(created_at__gte=since)
        .values_list("user_id")
        .annotate(n=Count("pk"))
        .values_list("user_id", "n")
    )
    violations: list[Violation] = []
    for user_id in sorted(set(counts) | set(journal)):
        seen = journal.get(user_id, AIJournal())
        rows = counts.get(user_id, 0)
        if rows < seen.answered:
            violations.append(
                Violation(
                    "ai_uses", f"user {user_id}", f"lost: {seen.answered} answered, {rows} rows"
                )
            )
        if rows > seen.asked:
            violations.append(
                Violation(
                    "ai_uses", f"user {user_id}", f"double-counted: {seen.asked} asked, {rows} rows"
                )
            )
    return violations


@dataclass(frozen=True)
class EditorWrite:
    """One write an editor client sent, in send order per file; ``acked`` when it was confirmed."""

    container_id: int
    path: str
    content: bytes
    acked: bool


def check_acked_writes(
    journal: Iterable[EditorWrite], current: Mapping[tuple[int, str], bytes | None]
) -> list[Violation]:
    """No acknowledged editor write lost: each file holds its last acked write or a later one.

    ``current`` maps (container, path) to the file's content now (None: missing). A write sent
    after the last acked one may have landed without its ack reaching the client, so its
    content is accepted too; anything else (older content, missing file) lost an acked write.
    Files of containers deleted since are the caller's to leave out.
    """
    by_file: dict[tuple[int, str], list[EditorWrite]] = defaultdict(list)
    for write in journal:
        by_file[(write.container_id, write.path)].append(write)
    violations: list[Violation] = []
    for key, writes in sorted(by_file.items()):
        acked = [i for i, write in enumerate(writes) if write.acked]
        if not acked:
            continue
        allowed = {write.content for write in writes[acked[-1] :]}
        if key not in current:
            continue
        now = current[key]
        if now is None or now not in allowed:
            state = "missing" if now is None else f"{len(now)} bytes of other content"
            violations.append(
                Violation(
                    "acked_writes",
                    f"container {key[0]} {key[1]}",
                    f"acked write {acked[-1] + 1} of {len(writes)} lost: file is {state}",
                )
            )
    return violations
