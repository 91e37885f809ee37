"""VM manager models: catalog, quotas, containers, nodes, templates and teams.

Writes with side effects live in ``vm_manager.services``; this module keeps fields,
constraints and small in-row derivations (resources from the type, quota from the user).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any, TypedDict

from django.conf import settings
from django.db import models
from django.db.models import Case, F, IntegerField, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from vm_manager.errors import (
    ContainerLimitReached,
    ContainerTypeNotAllowed,
    NotEnoughCredits,
    QuotaInactive,
    VMManagerError,
)
from vm_manager.names import friendly_name

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    from internal_config.models import AIUsageLog, AuditLog

DEFAULT_MAX_CONTAINERS_PER_USER = 10


def max_containers_per_user() -> int:
    """Config ``max_containers_per_user``: containers a user may own, stopped ones included;
    0 (or less) means no cap."""
    from internal_config.services import config_get_int

    return max(config_get_int("max_containers_per_user", DEFAULT_MAX_CONTAINERS_PER_USER), 0)


def utc_day_start() -> datetime:
    """Midnight UTC today: daily AI uses reset on the UTC day, whatever TIME_ZONE says."""
    return datetime.combine(timezone.now().astimezone(UTC).date(), time.min, tzinfo=UTC)


def ai_uses_of_today(user_id: Any) -> models.QuerySet[AIUsageLog]:
    """A user's AI uses of today, the UTC day: what the daily limit counts. ``user_id`` may be
    an ``OuterRef``."""
    from internal_config.models import AIUsageLog

    return AIUsageLog.objects.filter(user_id=user_id, created_at__gte=utc_day_start())


class ContainerType(models.Model):
    container_type_name = models.CharField(max_length=100, unique=True)
    memory_mb = models.PositiveIntegerField()
    vcpus = models.PositiveSmallIntegerField()
    disk_gib = models.PositiveIntegerField()
    credits_cost = models.PositiveIntegerField(default=1)
    private = models.BooleanField(
        default=False, help_text="Private types are not granted to new users automatically."
    )
    requires_kvm = models.BooleanField(
        default=False, help_text="Only schedule on nodes where KVM is usable."
    )

    class Meta:
        ordering = ("credits_cost", "container_type_name")
        constraints = (
            models.CheckConstraint(condition=Q(memory_mb__gte=64), name="containertype_memory_min"),
            models.CheckConstraint(condition=Q(vcpus__gte=1), name="containertype_vcpus_min"),
            models.CheckConstraint(condition=Q(disk_gib__gte=1), name="containertype_disk_min"),
        )

    def __str__(self) -> str:
        return self.container_type_name


def credits_held_sum() -> Coalesce:
    """SQL sum of the credits held by a set of containers; legacy ones without a type cost 1."""
    return Coalesce(
        Sum(
            Case(
                When(container_type__isnull=True, then=Value(1)),
                default=F("container_type__credits_cost"),
                output_field=IntegerField(),
            )
        ),
        Value(0),
    )


def live_q(prefix: str = "") -> Q:
    """Not being deleted. ``prefix`` reaches containers through a relation (``"containers__"``)."""
    return Q(**{f"{prefix}deleted_at__isnull": True})


def holding_capacity_q(prefix: str = "") -> Q:
    """The one definition of "holds capacity" (credits, vCPUs, memory): desired running and not
    being deleted. ``prefix`` as for ``live_q``."""
    return live_q(prefix) & Q(**{f"{prefix}desired_state": Container.DesiredState.RUNNING})


class ContainerQuerySet(models.QuerySet["Container"]):
    def live(self) -> ContainerQuerySet:
        """Not being deleted: counts toward the per-user cap and the node's disk."""
        return self.filter(live_q())

    def holding_capacity(self) -> ContainerQuerySet:
        """Holds credits, vCPUs and memory: desired running and not being deleted."""
        return self.filter(holding_capacity_q())

    def credits_held(self) -> int:
        return self.holding_capacity().aggregate(used=credits_held_sum())["used"]


class ResourceQuota(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota"
    )
    ai_use_per_day = models.PositiveIntegerField(default=5)
    credits = models.PositiveIntegerField(default=3)
    allowed_types = models.ManyToManyField(ContainerType, blank=True, related_name="quotas")
    active = models.BooleanField(
        default=True, help_text="Deactivating stops every container of this user."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("user__username",)

    def __str__(self) -> str:
        return f"quota of {self.user}"

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> ResourceQuota:
        instance = super().from_db(db, field_names, values)
        # Remembered so a save can tell an activation change (see signals).
        instance._loaded_active = instance.active if "active" in field_names else None
        return instance

    def calculate_used_credits(self, user: AbstractBaseUser | None = None) -> int:
        """Credits held by containers meant to run (desired_state running, not being deleted)."""
        owner = user if user is not None else self.user
        return Container.objects.filter(user=owner).credits_held()

    def credits_left(self, used: int | None = None) -> int:
        """``used``: the credits held, when already read (the user summary reads them with
        its count of held containers)."""
        return self.credits - (self.calculate_used_credits() if used is None else used)

    def can_create_container(self, container_type: ContainerType) -> bool:
        return self.refusal_for(container_type) is None

    def refusal_for(
        self, container_type: ContainerType | None, *, new_container: bool = True
    ) -> VMManagerError | None:
        """The quota rule: why ``container_type`` may not run now, or None when it may.

        ``new_container`` adds the per-user container cap (creation); powering on an existing
        container checks the rest. The caller holds the quota row lock when it acts on the answer.
        """
        if not self.active:
            return QuotaInactive()
        if (
            container_type is not None
            and not self.allowed_types.filter(pk=container_type.pk).exists()
        ):
            return ContainerTypeNotAllowed(
                f"Your quota does not allow the {container_type.container_type_name} type."
            )
        if new_container:
            limit = max_containers_per_user()
            owned = Container.objects.filter(user_id=self.user_id).live().count()
            if limit and owned >= limit:
                return ContainerLimitReached(
                    f"You have {owned} containers and the limit is {limit} per user "
                    "(stopped ones count too); delete one to create another."
                )
        cost = container_type.credits_cost if container_type is not None else 1
        left = self.credits_left()
        if left < cost:
            return NotEnoughCredits(f"This needs {cost} credits and you have {left} left.")
        return None

    def ai_uses_today(self) -> int:
        return ai_uses_of_today(self.user_id).count()

    def ai_uses_left_today(self, used: int | None = None) -> int:
        """``used``: today's count, when already read (the user summary reads it with the
        quota)."""
        return max(self.ai_use_per_day - (self.ai_uses_today() if used is None else used), 0)

    def get_user_logs(self) -> models.QuerySet[AuditLog]:
        from internal_config.models import AuditLog

        return AuditLog.objects.filter(user_id=self.user_id)

    def get_user_ai_logs(self) -> models.QuerySet[AIUsageLog]:
        from internal_config.models import AIUsageLog

        return AIUsageLog.objects.filter(user_id=self.user_id)


class Node(models.Model):
    name = models.CharField(max_length=100, unique=True)
    address = models.CharField(max_length=255, help_text="Host name or IP of the node agent.")
    port = models.PositiveIntegerField(default=8081)
    use_tls = models.BooleanField(default=False)
    auth_token = models.CharField(
        max_length=255, help_text="Bearer token of the node agent (secret)."
    )
    arch = models.CharField(max_length=32, default="x86_64")
    kvm_available = models.BooleanField(default=False)
    capacity_vcpus = models.PositiveIntegerField(default=0)
    capacity_mem_mb = models.PositiveIntegerField(default=0)
    capacity_disk_mb = models.PositiveBigIntegerField(
        default=0, help_text="Size of the agent's data disk, from its last health report."
    )
    free_disk_mb = models.PositiveBigIntegerField(
        default=0, help_text="Free space on the agent's data disk, from its last health report."
    )
    guest_isolation = models.BooleanField(
        default=False,
        help_text="The agent reported its guest egress policy in force; nodes without it "
        "receive no new containers.",
    )
    cpu_allocation_ratio = models.FloatField(
        default=4.0, help_text="vCPUs handed out per host CPU (overcommit)."
    )
    ram_allocation_ratio = models.FloatField(
        default=1.0, help_text="Guest memory handed out per MB of host memory."
    )
    disk_allocation_ratio = models.FloatField(
        default=1.0, help_text="Guest disk handed out per MB of the data disk."
    )
    healthy = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    active = models.BooleanField(
        default=True, help_text="Inactive nodes receive no new containers."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)
        constraints = (
            models.CheckConstraint(
                condition=Q(cpu_allocation_ratio__gt=0)
                & Q(ram_allocation_ratio__gt=0)
                & Q(disk_allocation_ratio__gt=0),
                name="node_allocation_ratios_positive",
            ),
        )

    def __str__(self) -> str:
        return self.name

    @property
    def agent_url(self) -> str:
        scheme = "https" if self.use_tls else "http"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{host}:{self.port}"

    def get_used_resources(self) -> NodeResources:
        used = (
            Container.objects.filter(node=self)
            .holding_capacity()
            .aggregate(
                vcpus=Coalesce(Sum("vcpus"), Value(0)),
                mem_mb=Coalesce(Sum("memory_mb"), Value(0)),
                containers=models.Count("pk"),
            )
        )
        return NodeResources(**used)

    def get_free_resources(self) -> NodeResources:
        used = self.get_used_resources()
        return NodeResources(
            vcpus=self.capacity_vcpus - used["vcpus"],
            mem_mb=self.capacity_mem_mb - used["mem_mb"],
            containers=used["containers"],
        )

    def get_node_score(self) -> float:
        free = self.get_free_resources()
        return node_score(free["mem_mb"], free["vcpus"], free["containers"])


class NodeResources(TypedDict):
    vcpus: int
    mem_mb: int
    containers: int


def node_score(free_mem_mb: int, free_vcpus: int, running_containers: int) -> float:
    """The spec's ranking: higher is better."""
    return 2.0 * free_mem_mb + 1.0 * free_vcpus - 0.5 * running_containers


class Container(models.Model):
    class DesiredState(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    class Status(models.TextChoices):
        CREATED = "created", "Created"
        PROVISIONING = "provisioning", "Provisioning"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        ERROR = "error", "Error"

    instance_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="containers"
    )
    quota = models.ForeignKey(
        ResourceQuota,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="containers",
        editable=False,
    )
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.PROTECT, related_name="containers"
    )
    container_type = models.ForeignKey(
        ContainerType,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="containers",
    )
    memory_mb = models.PositiveIntegerField(default=1024)
    vcpus = models.PositiveSmallIntegerField(default=1)
    disk_gib = models.PositiveIntegerField(default=5)
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    status_reason = models.CharField(max_length=500, blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    reconcile_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    workspace_initialized = models.BooleanField(default=False)
    # Power-off detail (the status stays running/stopped): ``suspended`` when the VM's memory
    # was saved and the next start resumes it; ``last_boot`` how the last start went.
    suspended = models.BooleanField(default=False)
    last_boot = models.CharField(max_length=16, blank=True)
    # Idle auto-stop: the last API call or open socket (written at most once a minute), and
    # whether the reconciler suspended the container for idleness (desired_state stays
    # running, so it keeps its credits and its place, and the next use resumes it).
    last_active_at = models.DateTimeField(null=True, blank=True)
    idle_suspended = models.BooleanField(default=False)
    deleted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when deletion was requested; the reconciler "
        "removes the VM and disk, then the row.",
    )
    claim_token = models.CharField(
        max_length=32, blank=True, editable=False, help_text="The reconcile run acting on it."
    )
    claimed_until = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="A killed run's claim expires here."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContainerQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = (
            models.Index(fields=("user", "desired_state"), name="container_user_desired"),
            models.Index(fields=("node", "desired_state"), name="container_node_desired"),
            models.Index(fields=("status", "desired_state"), name="container_status_desired"),
        )

    def __str__(self) -> str:
        return self.name or f"container {self.pk}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.assign_default_name()
        self.sync_resources_from_type()
        self.assign_quota_from_user()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "container_type" in update_fields:
            kwargs["update_fields"] = {*update_fields, "memory_mb", "vcpus", "disk_gib"}
        super().save(*args, **kwargs)

    @property
    def vm_id(self) -> str:
        return f"pq-{self.instance_id}"

    def sync_resources_from_type(self) -> None:
        if self.container_type is not None:
            self.memory_mb = self.container_type.memory_mb
            self.vcpus = self.container_type.vcpus
            self.disk_gib = self.container_type.disk_gib

    def assign_default_name(self) -> None:
        if not self.name:
            self.name = friendly_name()

    def assign_quota_from_user(self) -> None:
        if self.quota_id is None:
            self.quota = ResourceQuota.objects.filter(user_id=self.user_id).first()

    @property
    def credits_cost(self) -> int:
        return self.container_type.credits_cost if self.container_type_id else 1

    def get_machine_logs(self) -> models.QuerySet[AuditLog]:
        from internal_config.models import AuditLog

        return AuditLog.objects.filter(target_type="container", target_id=str(self.pk))

    def get_user_ai_logs(self) -> models.QuerySet[AIUsageLog]:
        from internal_config.models import AIUsageLog

        return AIUsageLog.objects.filter(container_id=self.pk)


def visible_containers_for(user: AbstractBaseUser | AnonymousUser) -> models.QuerySet[Container]:
    """Containers ``user`` may see: their own, and those of active teammates in active teams."""
    live = Container.objects.live()
    if not getattr(user, "is_authenticated", False):
        return live.none()
    if user.is_superuser:
        return live
    teams = TeamMembership.objects.filter(user=user, active=True, team__active=True).values(
        "team_id"
    )
    teammates = TeamMembership.objects.filter(team_id__in=teams, active=True).values("user_id")
    return live.filter(Q(user=user) | Q(user_id__in=teammates))


def can_view_container(user: AbstractBaseUser | AnonymousUser, container: Container | int) -> bool:
    pk = container.pk if isinstance(container, Container) else container
    return visible_containers_for(user).filter(pk=pk).exists()


class FileTemplate(models.Model):
    name = models.CharField(max_length=150)
    slug = models.SlugField(max_length=150, unique=True)
    description = models.TextField(blank=True)
    public = models.BooleanField(default=True, help_text="Visible to every user.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def items_count(self) -> int:
        return self.items.count()


class FileTemplateItem(models.Model):
    template = models.ForeignKey(FileTemplate, on_delete=models.CASCADE, related_name="items")
    path = models.CharField(max_length=500, help_text="Relative to the destination folder.")
    content = models.TextField(blank=True)
    mode = models.PositiveIntegerField(default=0o644, help_text="Unix permission bits.")
    order = models.IntegerField(default=0)

    class Meta:
        ordering = ("order", "path")
        constraints = (
            models.UniqueConstraint(fields=("template", "path"), name="templateitem_unique_path"),
            models.CheckConstraint(condition=Q(mode__lte=0o7777), name="templateitem_mode_bits"),
        )

    def __str__(self) -> str:
        return self.path


class Team(models.Model):
    name = models.CharField(max_length=150)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_teams"
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Admin"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("team", "user")
        constraints = (
            models.UniqueConstraint(fields=("team", "user"), name="teammembership_unique"),
        )
        indexes = (
            models.Index(fields=("user", "active"), name="membership_user_active"),
            models.Index(fields=("team", "active"), name="membership_team_active"),
        )

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"
