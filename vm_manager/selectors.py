"""Non-trivial reads of the VM manager.

Entry points: ``visible_containers_for``, ``can_view_container``, ``container_list_for_user``,
``container_rows_for_user``, ``live_visible_container``, ``container_types_for_user``,
``templates_for_user``, ``user_summary``. Node room for placement is read in
``vm_manager.placement.node_candidates``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.db.models import QuerySet

from vm_manager.errors import ContainerMissing, ContainerNotVisible
from vm_manager.models import (
    Container,
    ContainerType,
    FileTemplate,
    ResourceQuota,
    can_view_container,
    visible_containers_for,
)

__all__ = [
    "can_view_container",
    "container_list_for_user",
    "container_rows_for_user",
    "container_types_for_user",
    "live_visible_container",
    "templates_for_user",
    "user_summary",
    "visible_containers_for",
]


def container_list_for_user(user: object) -> QuerySet[Container]:
    return visible_containers_for(user).select_related("user", "container_type", "node")  # type: ignore[arg-type]


# What the container list shows, read as plain rows: building 50 model instances (with their
# user and type) costs more than the rest of the request together.
CONTAINER_ROW_FIELDS = (
    "id",
    "name",
    "created_at",
    "status",
    "desired_state",
    "user_id",
    "user__username",
    "container_type_id",
    "container_type__container_type_name",
    "memory_mb",
    "vcpus",
    "disk_gib",
    "node_id",
    "suspended",
    "idle_suspended",
    "last_boot",
    "last_active_at",
)


def container_rows_for_user(user: object) -> QuerySet[Container, dict[str, Any]]:
    """The visible containers as dicts of ``CONTAINER_ROW_FIELDS``, newest first, one query."""
    return visible_containers_for(user).values(*CONTAINER_ROW_FIELDS)  # type: ignore[arg-type]


def live_visible_container(user: Any, pk: int) -> Container:
    """The live container ``pk`` if ``user`` may open it (the sockets' access rule).

    ``ContainerNotVisible`` when it exists but is not visible to ``user``; ``ContainerMissing``
    when there is none or it is being deleted. One query when visible; the second only tells
    the two refusals apart.
    """
    container = visible_containers_for(user).select_related("node").filter(pk=pk).first()
    if container is not None:
        return container
    if Container.objects.filter(pk=pk).live().exists():
        raise ContainerNotVisible()
    raise ContainerMissing()


def container_types_for_user(user: Any) -> QuerySet[ContainerType]:
    """The types the user's quota allows (none without a quota)."""
    return ContainerType.objects.filter(quotas__user=user)


def templates_for_user(user: Any) -> QuerySet[FileTemplate]:
    """Staff allowed to view or change templates see every one; everyone else the public ones."""
    templates = FileTemplate.objects.prefetch_related("items")
    sees_all = user.is_staff and (
        user.has_perm("vm_manager.view_filetemplate")
        or user.has_perm("vm_manager.change_filetemplate")
    )
    return templates if sees_all else templates.filter(public=True)


class QuotaSummary(TypedDict):
    credits: int
    credits_left: int
    ai_use_per_day: int
    ai_uses_left_today: int
    active: bool
    allowed_types: list[ContainerType]


class UserSummary(TypedDict):
    username: str
    active_containers: int
    has_quota: bool
    is_superuser: bool
    quota: QuotaSummary | None


def user_summary(user: Any) -> UserSummary:
    """What ``/api/user/me/`` shows: own containers meant to run, and the quota's state."""
    active = Container.objects.filter(user=user).holding_capacity().count()
    quota = ResourceQuota.objects.filter(user=user).select_related("user").first()
    summary: QuotaSummary | None = None
    if quota is not None:
        summary = QuotaSummary(
            credits=quota.credits,
            credits_left=quota.credits_left(),
            ai_use_per_day=quota.ai_use_per_day,
            ai_uses_left_today=quota.ai_uses_left_today(),
            active=quota.active,
            allowed_types=list(quota.allowed_types.all()),
        )
    return UserSummary(
        username=user.get_username(),
        active_containers=active,
        has_quota=quota is not None,
        is_superuser=user.is_superuser,
        quota=summary,
    )
