"""Every write of the VM manager goes through one function here.

Entry points:
- ``quota_create_for_user(user)``: the quota every new user gets.
- ``quota_stop_all_containers(quota)``: what deactivating a quota does.
- ``container_create(user=, container_type_id=, name=)``: credit-checked, placed on a node.
- ``container_set_desired_state(container, state)``, ``container_power_on``,
  ``container_power_off``: credit-checked intent changes.
- ``container_rename(container, name)``.
- ``container_request_delete(container)``: the reconciler removes VM, disk and row.
- ``container_set_status(container, status, reason=)``: observed-state transitions.
- ``team_sync_memberships(team)``: owner is admin; inactive team, inactive memberships.
- ``reconcile_request(container_ids)``: ask the reconciler, after commit.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from internal_config.services import config_get_int
from vm_manager.dispatch import dispatch_reconcile
from vm_manager.errors import (
    ContainerTypeNotAllowed,
    InvalidStatusTransition,
    NoNodeAvailable,
    NotEnoughCredits,
    QuotaInactive,
    UnknownContainerType,
)
from vm_manager.models import (
    Container,
    ContainerType,
    Node,
    ResourceQuota,
    Team,
    TeamMembership,
)
from vm_manager.scheduler import Demand, Scheduler
from vm_manager.selectors import node_candidates
from vm_manager.states import can_transition

DEFAULT_AI_USE_PER_DAY = 5
DEFAULT_CREDITS = 3


def reconcile_request(container_ids: list[int]) -> None:
    """Request a targeted reconcile of ``container_ids`` once the transaction commits."""
    if container_ids:
        transaction.on_commit(partial(dispatch_reconcile, list(container_ids)))


# -- quotas --------------------------------------------------------------------------------


@transaction.atomic
def quota_create_for_user(user: Any) -> ResourceQuota:
    """Idempotent: the user's quota, created from Config defaults with every public type."""
    quota, created = ResourceQuota.objects.get_or_create(
        user=user,
        defaults={
            "ai_use_per_day": max(
                config_get_int("default_ai_use_per_day", DEFAULT_AI_USE_PER_DAY), 0
            ),
            "credits": max(config_get_int("default_credits", DEFAULT_CREDITS), 0),
        },
    )
    if created:
        quota.allowed_types.set(ContainerType.objects.filter(private=False))
    return quota


@transaction.atomic
def quota_stop_all_containers(quota: ResourceQuota) -> list[int]:
    """Every container of the quota's user becomes desired stopped; one reconcile request."""
    containers = Container.objects.select_for_update().filter(
        user_id=quota.user_id, deleted_at__isnull=True
    )
    ids = list(containers.values_list("pk", flat=True))
    Container.objects.filter(pk__in=ids).update(
        desired_state=Container.DesiredState.STOPPED, updated_at=timezone.now()
    )
    reconcile_request(ids)
    return ids


@transaction.atomic
def quota_set_active(quota: ResourceQuota, active: bool) -> ResourceQuota:
    quota.active = active
    quota.save(update_fields=["active", "updated_at"])
    return quota


def _locked_quota(user: Any) -> ResourceQuota:
    quota = ResourceQuota.objects.select_for_update().filter(user=user).first()
    if quota is None:
        raise QuotaInactive("You have no quota.")
    return quota


def _check_can_run(quota: ResourceQuota, container_type: ContainerType | None, cost: int) -> None:
    """The same rule as ``ResourceQuota.can_create_container``, with a reason when it fails."""
    if not quota.active:
        raise QuotaInactive()
    if container_type is not None and not quota.allowed_types.filter(pk=container_type.pk).exists():
        raise ContainerTypeNotAllowed(
            f"Your quota does not allow the {container_type.container_type_name} type."
        )
    left = quota.credits_left()
    if left < cost:
        raise NotEnoughCredits(f"This needs {cost} credits and you have {left} left.")


# -- containers ----------------------------------------------------------------------------


def _place(demand: Demand) -> Node:
    """Pick the best node and lock it, re-checking its capacity under the lock."""
    timeout = timedelta(seconds=settings.NODE_HEARTBEAT_TIMEOUT_SECONDS)
    now = timezone.now()
    for candidate in Scheduler(node_candidates(), now, timeout).ranked(demand):
        node = Node.objects.select_for_update().get(pk=candidate.node_id)
        fresh = node_candidates([node.pk])[0]
        if Scheduler([fresh], now, timeout).place(demand) is not None:
            return node
    raise NoNodeAvailable()


@transaction.atomic
def container_create(*, user: Any, container_type_id: int, name: str = "") -> Container:
    container_type = ContainerType.objects.filter(pk=container_type_id).first()
    if container_type is None:
        raise UnknownContainerType(f"There is no container type {container_type_id}.")
    quota = _locked_quota(user)
    _check_can_run(quota, container_type, container_type.credits_cost)
    node = _place(Demand(vcpus=container_type.vcpus, memory_mb=container_type.memory_mb))
    container = Container.objects.create(
        user=user,
        quota=quota,
        container_type=container_type,
        node=node,
        name=name.strip(),
        desired_state=Container.DesiredState.RUNNING,
    )
    reconcile_request([container.pk])
    return container


@transaction.atomic
def container_set_desired_state(container: Container, desired_state: str) -> Container:
    """Change intent; starting is credit-checked under the quota lock. Idempotent."""
    if desired_state not in Container.DesiredState.values:
        raise InvalidStatusTransition(f"Unknown desired state {desired_state!r}.")
    if desired_state == Container.DesiredState.RUNNING:
        quota = _locked_quota(container.user)
        container = Container.objects.select_for_update().get(pk=container.pk)
        if container.desired_state != Container.DesiredState.RUNNING:
            _check_can_run(quota, container.container_type, container.credits_cost)
    else:
        container = Container.objects.select_for_update().get(pk=container.pk)
    if container.desired_state != desired_state:
        container.desired_state = desired_state
        container.reconcile_attempts = 0
        container.next_attempt_at = None
        container.save(
            update_fields=["desired_state", "reconcile_attempts", "next_attempt_at", "updated_at"]
        )
    reconcile_request([container.pk])
    return container


def container_power_on(container: Container) -> Container:
    return container_set_desired_state(container, Container.DesiredState.RUNNING)


def container_power_off(container: Container) -> Container:
    return container_set_desired_state(container, Container.DesiredState.STOPPED)


@transaction.atomic
def container_rename(container: Container, name: str) -> Container:
    """A blank name gets a fresh friendly one, as at creation."""
    container = Container.objects.select_for_update().get(pk=container.pk)
    container.name = name.strip()
    container.assign_default_name()
    container.save(update_fields=["name", "updated_at"])
    return container


@transaction.atomic
def container_request_delete(container: Container) -> Container:
    container = Container.objects.select_for_update().get(pk=container.pk)
    if container.deleted_at is None:
        container.deleted_at = timezone.now()
        container.desired_state = Container.DesiredState.STOPPED
        container.save(update_fields=["deleted_at", "desired_state", "updated_at"])
    reconcile_request([container.pk])
    return container


def container_set_status(container: Container, status: str, reason: str = "") -> Container:
    """Record an observed status; only transitions in ``vm_manager.states`` are allowed."""
    if not can_transition(container.status, status):
        raise InvalidStatusTransition(f"{container.status} -> {status} is not allowed.")
    fields = ["status_reason", "updated_at"]
    if container.status != status:
        container.status = status
        container.status_changed_at = timezone.now()
        fields += ["status", "status_changed_at"]
    container.status_reason = reason[:500]
    container.save(update_fields=fields)
    return container


# -- teams ---------------------------------------------------------------------------------


@transaction.atomic
def team_sync_memberships(team: Team) -> None:
    """Owner holds an active ADMIN membership; an inactive team has only inactive ones."""
    if not team.active:
        TeamMembership.objects.filter(team=team, active=True).update(active=False)
        return
    membership, created = TeamMembership.objects.get_or_create(
        team=team,
        user_id=team.owner_id,
        defaults={"role": TeamMembership.Role.ADMIN, "active": True},
    )
    if not created and (membership.role != TeamMembership.Role.ADMIN or not membership.active):
        membership.role = TeamMembership.Role.ADMIN
        membership.active = True
        membership.save(update_fields=["role", "active"])
