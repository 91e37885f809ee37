"""Non-trivial reads of the VM manager.

Entry points: ``visible_containers_for``, ``can_view_container``, ``container_list_for_user``,
``node_candidates``, ``used_credits_for_user``.
"""

from __future__ import annotations

from django.db.models import Count, IntegerField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from vm_manager.models import (
    Container,
    Node,
    can_view_container,
    visible_containers_for,
)
from vm_manager.scheduler import NodeCandidate

__all__ = [
    "can_view_container",
    "container_list_for_user",
    "node_candidates",
    "visible_containers_for",
]


def container_list_for_user(user: object) -> QuerySet[Container]:
    return visible_containers_for(user).select_related("user", "container_type", "node")  # type: ignore[arg-type]


def node_candidates(node_ids: list[int] | None = None) -> list[NodeCandidate]:
    """Every node with its free capacity, in one query."""
    holding = Q(
        containers__desired_state=Container.DesiredState.RUNNING,
        containers__deleted_at__isnull=True,
    )
    nodes = Node.objects.annotate(
        used_vcpus=Coalesce(Sum("containers__vcpus", filter=holding), Value(0)),
        used_mem=Coalesce(Sum("containers__memory_mb", filter=holding), Value(0)),
        running=Coalesce(
            Count("containers", filter=holding), Value(0), output_field=IntegerField()
        ),
    ).order_by("pk")
    if node_ids is not None:
        nodes = nodes.filter(pk__in=node_ids)
    return [
        NodeCandidate(
            node_id=node.pk,
            name=node.name,
            arch=node.arch,
            kvm_available=node.kvm_available,
            healthy=node.healthy,
            active=node.active,
            heartbeat_at=node.heartbeat_at,
            free_vcpus=node.capacity_vcpus - node.used_vcpus,
            free_mem_mb=node.capacity_mem_mb - node.used_mem,
            running=node.running,
        )
        for node in nodes
    ]
