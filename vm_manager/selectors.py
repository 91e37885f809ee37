"""Non-trivial reads of the VM manager.

Entry points: ``visible_containers_for``, ``can_view_container``, ``container_list_for_user``,
``container_rows_for_user``, ``container_rows_list_for_user``, ``live_visible_container``,
``container_types_for_user``, ``templates_for_user``, ``user_summary``. Node room for
placement is read in ``vm_manager.placement.node_candidates``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, F, Func, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.sql.compiler import SQLCompiler

from vm_manager.errors import ContainerMissing, ContainerNotVisible
from vm_manager.models import (
    Container,
    ContainerType,
    FileTemplate,
    ResourceQuota,
    ai_uses_of_today,
    can_view_container,
    credits_held_sum,
    visible_containers_for,
)

__all__ = [
    "can_view_container",
    "container_list_for_user",
    "container_rows_for_user",
    "container_rows_list_for_user",
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


def container_rows_list_for_user(user: Any) -> list[dict[str, Any]]:
    """``container_rows_for_user`` read at once, through a statement compiled once per thread.

    The frontend polls the list every 2 s per open tab, and building and compiling its query
    (visibility through two team subqueries) costs the ORM more than running it. The SQL
    depends on the user only through their id, so each thread compiles it once for a stand-in
    id and then only swaps the id in: same rule (``visible_containers_for``), same SQL.
    """
    if not getattr(user, "is_authenticated", False) or user.is_superuser:
        return list(container_rows_for_user(user))
    statement = getattr(_thread_statements, "container_rows", None)
    if statement is None:
        statement = _thread_statements.container_rows = _RowsStatement.compile()
    return statement.run(user.pk)


# No user has a negative id: it marks where the user's id goes in the compiled statement.
_STAND_IN_USER_PK = -424_242_424
_thread_statements = threading.local()


@dataclass(frozen=True)
class _RowsStatement:
    sql: str
    params: tuple[Any, ...]
    compiler: SQLCompiler
    converters: dict[int, Any]

    @classmethod
    def compile(cls) -> _RowsStatement:
        stand_in = get_user_model()(pk=_STAND_IN_USER_PK, is_superuser=False)
        rows = container_rows_for_user(stand_in)
        compiler = rows.query.get_compiler(rows.db)
        sql, params = compiler.as_sql()
        if _STAND_IN_USER_PK not in params or compiler.col_count != len(CONTAINER_ROW_FIELDS):
            raise ImproperlyConfigured("the container list query changed shape")
        columns = [column for column, *_ in compiler.select[: compiler.col_count]]
        return cls(sql, tuple(params), compiler, compiler.get_converters(columns))

    def run(self, user_pk: int) -> list[dict[str, Any]]:
        params = [user_pk if param == _STAND_IN_USER_PK else param for param in self.params]
        with self.compiler.connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows: Iterable[Any] = cursor.fetchall()
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        return [dict(zip(CONTAINER_ROW_FIELDS, row, strict=True)) for row in rows]


def live_visible_container(user: Any, pk: int) -> Container:
    """The live container ``pk`` if ``user`` may open it (the sockets' access rule).

    ``ContainerNotVisible`` when it exists but is not visible to ``user``; ``ContainerMissing``
    when there is none or it is being deleted. One query for the owner (every console, editor
    and AI turn checks this): a container is visible to its owner by ``visible_containers_for``'s
    rule, whose team subqueries cost more to build and plan than the rest of an AI turn's
    reservation; anyone else is asked that rule in a second query.
    """
    container = Container.objects.live().select_related("node").filter(pk=pk).first()
    if container is None:
        raise ContainerMissing()
    owner = getattr(user, "is_authenticated", False) and container.user_id == user.pk
    if owner or can_view_container(user, container):
        return container
    raise ContainerNotVisible()


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


class ContainerTypeRow(TypedDict):
    """What the user summary and the container type list show of a type."""

    id: int
    container_type_name: str
    memory_mb: int
    vcpus: int
    disk_gib: int
    credits_cost: int


CONTAINER_TYPE_FIELDS = tuple(ContainerTypeRow.__annotations__)


class QuotaSummary(TypedDict):
    credits: int
    credits_left: int
    ai_use_per_day: int
    ai_uses_left_today: int
    active: bool
    allowed_types: list[ContainerTypeRow]


class UserSummary(TypedDict):
    username: str
    active_containers: int
    has_quota: bool
    is_superuser: bool
    quota: QuotaSummary | None


def user_summary(user: Any) -> UserSummary:
    """What ``/api/user/me/`` shows: own containers meant to run, and the quota's state.

    Three queries and plain values (ready for JSON), since the frontend polls it every 2 s per
    tab: the held containers' count and credits in one aggregate, the quota with today's AI
    uses as a subquery, its types as rows.
    """
    held = (
        Container.objects.filter(user=user)
        .holding_capacity()
        .aggregate(active=Count("pk"), used=credits_held_sum())
    )
    uses_today = (
        ai_uses_of_today(OuterRef("user_id"))
        .order_by()
        .annotate(count=Func(F("pk"), function="COUNT"))
        .values("count")
    )
    quota = (
        ResourceQuota.objects.filter(user=user)
        .annotate(uses_today=Subquery(uses_today, output_field=IntegerField()))
        .order_by()  # one row at most: not the admin's ordering, which joins the user
        .first()
    )
    summary: QuotaSummary | None = None
    if quota is not None:
        summary = QuotaSummary(
            credits=quota.credits,
            credits_left=quota.credits_left(used=held["used"]),
            ai_use_per_day=quota.ai_use_per_day,
            ai_uses_left_today=quota.ai_uses_left_today(used=quota.uses_today),
            active=quota.active,
            allowed_types=list(quota.allowed_types.values(*CONTAINER_TYPE_FIELDS)),  # type: ignore[arg-type]
        )
    return UserSummary(
        username=user.get_username(),
        active_containers=held["active"],
        has_quota=quota is not None,
        is_superuser=user.is_superuser,
        quota=summary,
    )
