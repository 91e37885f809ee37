"""Every write of the VM manager goes through one function here.

Entry points:
- ``quota_create_for_user(user)``: the quota every new user gets.
- ``quota_stop_all_containers(quota)``: what deactivating a quota does.
- ``quota_set_active(quota, active)``: (de)activation; deactivating stops every container.
- ``container_create(user=, container_type_id=, name=)``: quota-checked (cap, credits), placed.
- ``container_update(container, name=, desired_state=)``: both in one transaction.
- ``container_set_desired_state(container, state)``, ``container_power_on``,
  ``container_power_off``: credit-checked intent changes.
- ``container_request_delete(container)``: the reconciler removes VM, disk and row.
- ``container_record_status(container, status, reason, claim_token=)``: the observed-state
  writer (the reconciler's), transitions from ``vm_manager.states``, compare-and-set.
- ``node_register(name, url=, token=)``: add or update a node from its agent URL; audited.
- ``team_sync_memberships(team)``: owner is admin; inactive team, inactive memberships.
- ``reconcile_request(container_ids)``: ask the reconciler, after commit.

The quota rule itself is ``ResourceQuota.refusal_for``; placement is ``vm_manager.placement``.
Lock order: quota row, then node rows (placement), then container rows.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from internal_config.audit import audit_log_ws
from internal_config.services import config_get_int
from pequeroku.errors import DomainError
from vm_manager.errors import (
    InvalidStatusTransition,
    NoNodeAvailable,
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
from vm_manager.nodes import parse_agent_url
from vm_manager.placement import place_containers
from vm_manager.states import can_transition

DEFAULT_AI_USE_PER_DAY = 5
DEFAULT_CREDITS = 3


def reconcile_request(container_ids: list[int]) -> None:
    """Request a targeted reconcile of ``container_ids`` once the transaction commits."""
    # Imported here: the reconciler records statuses through this module.
    from vm_manager.reconciler import request_reconcile

    if container_ids:
        transaction.on_commit(partial(request_reconcile, list(container_ids)))


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
    containers = Container.objects.select_for_update().filter(user_id=quota.user_id).live()
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


def _raise_refusal(
    quota: ResourceQuota, container_type: ContainerType | None, *, new_container: bool
) -> None:
    refusal = quota.refusal_for(container_type, new_container=new_container)
    if refusal is not None:
        raise refusal


# -- containers ----------------------------------------------------------------------------


@transaction.atomic
def container_create(*, user: Any, container_type_id: int, name: str = "") -> Container:
    """Checked against the quota (cap, type, credits) under its row lock, then placed."""
    container_type = ContainerType.objects.filter(pk=container_type_id).first()
    if container_type is None:
        raise UnknownContainerType(f"There is no container type {container_type_id}.")
    quota = _locked_quota(user)
    _raise_refusal(quota, container_type, new_container=True)
    container = Container(
        user=user,
        quota=quota,
        container_type=container_type,
        name=name.strip(),
        desired_state=Container.DesiredState.RUNNING,
    )
    [node_id] = place_containers([container])
    if node_id is None:
        raise NoNodeAvailable()
    container.node_id = node_id
    container.save(force_insert=True)
    reconcile_request([container.pk])
    return container


def _apply_desired_state(container: Container, desired_state: str) -> Container:
    """Inside a transaction: lock, credit-check a start under the quota lock, write."""
    if desired_state not in Container.DesiredState.values:
        raise InvalidStatusTransition(f"Unknown desired state {desired_state!r}.")
    if desired_state == Container.DesiredState.RUNNING:
        quota = _locked_quota(container.user)
        container = Container.objects.select_for_update().get(pk=container.pk)
        if container.desired_state != Container.DesiredState.RUNNING:
            _raise_refusal(quota, container.container_type, new_container=False)
    else:
        container = Container.objects.select_for_update().get(pk=container.pk)
    if container.desired_state != desired_state or container.idle_suspended:
        # A power action ends an idle suspension: powering on resumes, powering off keeps
        # the saved state as an ordinary suspended power-off.
        container.desired_state = desired_state
        container.idle_suspended = False
        container.reconcile_attempts = 0
        container.next_attempt_at = None
        container.save(
            update_fields=[
                "desired_state",
                "idle_suspended",
                "reconcile_attempts",
                "next_attempt_at",
                "updated_at",
            ]
        )
    return container


@transaction.atomic
def container_set_desired_state(container: Container, desired_state: str) -> Container:
    """Change intent; starting is credit-checked under the quota lock. Idempotent."""
    container = _apply_desired_state(container, desired_state)
    reconcile_request([container.pk])
    return container


@transaction.atomic
def container_update(
    container: Container, *, name: str | None = None, desired_state: str | None = None
) -> Container:
    """Name and desired state in one transaction: a refused start leaves the name as it was."""
    if desired_state is not None:
        container = _apply_desired_state(container, desired_state)
    if name is not None:
        container = Container.objects.select_for_update().get(pk=container.pk)
        container.name = name.strip()
        container.assign_default_name()  # a blank name gets a fresh friendly one
        container.save(update_fields=["name", "updated_at"])
    if desired_state is not None:
        reconcile_request([container.pk])
    return container


def container_power_on(container: Container) -> Container:
    return container_set_desired_state(container, Container.DesiredState.RUNNING)


def container_power_off(container: Container) -> Container:
    return container_set_desired_state(container, Container.DesiredState.STOPPED)


@transaction.atomic
def container_request_delete(container: Container) -> Container:
    container = Container.objects.select_for_update().get(pk=container.pk)
    if container.deleted_at is None:
        container.deleted_at = timezone.now()
        container.desired_state = Container.DesiredState.STOPPED
        container.save(update_fields=["deleted_at", "desired_state", "updated_at"])
    reconcile_request([container.pk])
    return container


def container_record_status(
    container: Container,
    status: str,
    reason: str = "",
    *,
    claim_token: str | None = None,
    **extra: Any,
) -> bool:
    """Record an observed status; False when the row was not ours to write.

    ``container`` is the row as the caller read it. A transition ``vm_manager.states`` does not
    allow (directly or through ``provisioning``, the hop a start makes) is recorded as
    ``error``. With ``claim_token`` the write lands only while that reconcile run holds the
    row; without one it is a compare-and-set on the status, reason and attempts the caller
    read, and never touches a row another run has claimed: two overlapping runs record a
    crash once. ``extra`` are further fields (attempts, backoff) written in the same UPDATE.
    """
    S = Container.Status
    via_provisioning = can_transition(container.status, S.PROVISIONING) and can_transition(
        S.PROVISIONING, status
    )
    if not (can_transition(container.status, status) or via_provisioning):
        status = S.ERROR
    fields: dict[str, Any] = {"status_reason": reason[:500], "updated_at": timezone.now(), **extra}
    if status != container.status:
        fields["status"] = status
        fields["status_changed_at"] = fields["updated_at"]
    rows = Container.objects.filter(pk=container.pk)
    if claim_token is not None:
        rows = rows.filter(claim_token=claim_token)
    else:
        rows = rows.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now()),
            status=container.status,
            status_reason=container.status_reason,
            reconcile_attempts=container.reconcile_attempts,
        )
    return rows.update(**fields) == 1


# -- nodes ---------------------------------------------------------------------------------


@transaction.atomic
def node_register(name: str, *, url: str, token: str, arch: str | None = None) -> Node:
    """Create the node, or update its address and token; it is healthy only after a probe."""
    address, port, use_tls = parse_agent_url(url)
    if not token.strip():
        raise DomainError("The node token must not be empty.")
    defaults: dict[str, object] = {
        "address": address,
        "port": port,
        "use_tls": use_tls,
        "auth_token": token.strip(),
        "active": True,
    }
    if arch:
        defaults["arch"] = arch
    node, created = Node.objects.update_or_create(name=name, defaults=defaults)
    audit_log_ws(
        action="node.register",
        target_type="node",
        target_id=node.pk,
        message=f"{'added' if created else 'updated'} {node.name} at {node.agent_url}",
    )
    return node


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
