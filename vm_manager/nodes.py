"""Node health (registering a node is ``services.node_register``).

Entry points:
- ``parse_agent_url(url)``: (host, port, TLS) of an agent URL, or ``InvalidNodeUrl``.
- ``node_probe(nodes, with_vms=)``: async; asks every node's agent for health (and its VM
  list) at once, never raising.
- ``node_apply_health(nodes, probes, now)``: records healthy, heartbeat_at, arch, KVM,
  capacities, disk, guest isolation and last_error in one query.
- ``node_heartbeat(nodes)``: both, for ``reconcile --heartbeat-only`` and ``register_node``.

A node's freshness is judged against ``settings.NODE_HEARTBEAT_TIMEOUT_SECONDS`` by
placement; a failed probe marks it unhealthy at once. The agent token never leaves the row.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from pequeroku.errors import DomainError
from vm_manager.drivers import NodeError, NodeHealth, VMStatus, get_node_driver
from vm_manager.models import Node

PROBE_TIMEOUT_SECONDS = 15.0


class InvalidNodeUrl(DomainError):
    status_code = 400
    code = "invalid_node_url"
    default_message = "The node URL must look like http://host:port."


@dataclass
class NodeProbe:
    """What one pass learned about a node; ``error`` set means it did not answer."""

    node_id: int
    health: NodeHealth | None = None
    vms: dict[str, VMStatus] | None = None
    error: str = ""

    @property
    def reachable(self) -> bool:
        return not self.error


@dataclass
class HeartbeatReport:
    healthy: list[str] = field(default_factory=list)
    unhealthy: dict[str, str] = field(default_factory=dict)


def parse_agent_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidNodeUrl()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8081)
    except ValueError:
        raise InvalidNodeUrl() from None
    return parts.hostname, port, parts.scheme == "https"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "node agent timed out"
    text = str(exc) or exc.__class__.__name__
    return text[:1000]


async def _probe_one(node: Node, with_vms: bool) -> NodeProbe:
    probe = NodeProbe(node_id=node.pk)
    try:
        driver = get_node_driver(node)
        if with_vms:
            health, vms = await asyncio.wait_for(
                asyncio.gather(driver.health(), driver.vm_list()), PROBE_TIMEOUT_SECONDS
            )
            probe.vms = {vm["vm_id"]: vm for vm in vms}
        else:
            health = await asyncio.wait_for(driver.health(), PROBE_TIMEOUT_SECONDS)
        probe.health = health
    except (NodeError, OSError, TimeoutError) as exc:
        probe.error = _describe(exc)
    return probe


async def node_probe(nodes: list[Node], *, with_vms: bool = True) -> dict[int, NodeProbe]:
    probes = await asyncio.gather(*(_probe_one(node, with_vms) for node in nodes))
    return {probe.node_id: probe for probe in probes}


HEALTH_FIELDS = (
    "healthy",
    "heartbeat_at",
    "arch",
    "kvm_available",
    "capacity_vcpus",
    "capacity_mem_mb",
    "capacity_disk_mb",
    "free_disk_mb",
    "guest_isolation",
    "last_error",
)


def node_apply_health(nodes: list[Node], probes: dict[int, NodeProbe], now: datetime) -> None:
    """One UPDATE for all probed nodes (their rows locked first, in placement's order); a
    failed probe keeps the last known capacities."""
    changed: list[Node] = []
    for node in nodes:
        probe = probes.get(node.pk)
        if probe is None:
            continue
        if probe.health is not None:
            health = probe.health
            node.healthy = True
            node.heartbeat_at = now
            node.arch = health["arch"]
            node.kvm_available = health["kvm_available"]
            node.capacity_vcpus = health["capacity_vcpus"]
            node.capacity_mem_mb = health["capacity_mem_mb"]
            node.capacity_disk_mb = health["capacity_disk_mb"]
            node.free_disk_mb = health["free_disk_mb"]
            node.guest_isolation = health["guest_isolation"]
            node.last_error = ""
        else:
            node.healthy = False
            node.last_error = probe.error
        changed.append(node)
    if changed:
        with transaction.atomic(savepoint=False):
            # Placement locks node rows in primary-key order; taking them the same way first
            # means a heartbeat and a create can never deadlock on two nodes.
            list(
                Node.objects.select_for_update()
                .filter(pk__in=[node.pk for node in changed])
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            Node.objects.bulk_update(changed, HEALTH_FIELDS)


def node_heartbeat(nodes: list[Node] | None = None) -> HeartbeatReport:
    """Probe ``nodes`` (default: every node) for health and record the result."""
    nodes = list(Node.objects.all()) if nodes is None else nodes
    probes = async_to_sync(node_probe)(nodes, with_vms=False)
    node_apply_health(nodes, probes, timezone.now())
    report = HeartbeatReport()
    for node in nodes:
        if probes[node.pk].reachable:
            report.healthy.append(node.name)
        else:
            report.unhealthy[node.name] = probes[node.pk].error
    return report
