from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone

from pequeroku.admin import SecretFieldsAdmin
from pequeroku.errors import DomainError
from vm_manager import idle, services
from vm_manager.api.audit import audited
from vm_manager.models import (
    Container,
    ContainerType,
    FileTemplate,
    FileTemplateItem,
    Node,
    ResourceQuota,
    Team,
    TeamMembership,
    credits_held_sum,
)
from vm_manager.names import display_name_validator, no_markup_validator


class ShownNamesAdmin(admin.ModelAdmin):
    """Names and texts that other users see follow ``vm_manager.names``' rules here too."""

    display_name_fields: tuple[str, ...] = ("name",)
    markup_free_fields: tuple[str, ...] = ()

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name in self.display_name_fields:
            field.validators.append(display_name_validator)
        if field is not None and db_field.name in self.markup_free_fields:
            field.validators.append(no_markup_validator)
        return field


@admin.register(ContainerType)
class ContainerTypeAdmin(ShownNamesAdmin):
    display_name_fields = ("container_type_name",)
    list_display = (
        "container_type_name",
        "vcpus",
        "memory_mb",
        "disk_gib",
        "credits_cost",
        "private",
        "requires_kvm",
    )
    list_filter = ("private", "requires_kvm")
    search_fields = ("container_type_name",)


def _credits_used_subquery() -> Subquery:
    held = (
        Container.objects.filter(user_id=OuterRef("user_id"))
        .holding_capacity()
        .values("user_id")
        .annotate(total=credits_held_sum())
        .values("total")
    )
    return Subquery(held, output_field=IntegerField())


def _audited_service(
    request: HttpRequest, action: str, *, target_type: str, target_id: int
) -> AbstractContextManager[Any]:
    """The API's audit row for an admin action: same action names, ``via: admin``."""
    return audited(
        request,  # type: ignore[arg-type]
        action,
        target_type=target_type,
        target_id=target_id,
        metadata={"via": "admin"},
    )


@admin.register(ResourceQuota)
class ResourceQuotaAdmin(admin.ModelAdmin):
    list_display = ("user", "credits", "credits_used", "ai_use_per_day", "active")
    list_filter = ("active", "allowed_types")
    search_fields = ("user__username", "user__email")
    filter_horizontal = ("allowed_types",)
    list_select_related = ("user",)
    readonly_fields = ("created_at", "updated_at")
    actions = ("deactivate", "activate")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ResourceQuota]:
        return (
            super()
            .get_queryset(request)
            .annotate(used=Coalesce(_credits_used_subquery(), Value(0)))
        )

    @admin.display(description="credits used", ordering="used")
    def credits_used(self, obj: ResourceQuota) -> int:
        return obj.used

    def _set_active(self, request: HttpRequest, quota: ResourceQuota, active: bool) -> None:
        action = "quota.activate" if active else "quota.deactivate"
        with _audited_service(request, action, target_type="quota", target_id=quota.pk):
            services.quota_set_active(quota, active)

    @admin.action(description="Deactivate (stops every container)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ResourceQuota]) -> None:
        quotas = list(queryset)
        for quota in quotas:
            self._set_active(request, quota, False)
        self.message_user(request, f"Deactivated {len(quotas)} quota(s).")

    @admin.action(description="Activate")
    def activate(self, request: HttpRequest, queryset: QuerySet[ResourceQuota]) -> None:
        quotas = list(queryset)
        for quota in quotas:
            self._set_active(request, quota, True)
        self.message_user(request, f"Activated {len(quotas)} quota(s).")

    def save_model(
        self, request: HttpRequest, obj: ResourceQuota, form: forms.ModelForm, change: bool
    ) -> None:
        """Editing ``active`` is the (de)activate service with its audit row."""
        if not (change and "active" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        wanted = obj.active
        obj.active = form.initial["active"]
        super().save_model(request, obj, form, change)
        self._set_active(request, obj, wanted)


POWER_ACTIONS = {
    Container.DesiredState.RUNNING: "container.power_on",
    Container.DesiredState.STOPPED: "container.power_off",
}


def _duration(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"


class ContainerAdminForm(forms.ModelForm):
    """Turning a container on here is refused for the same reason the API would refuse it."""

    class Meta:
        model = Container
        fields = "__all__"  # noqa: DJ007 - the admin's own fieldsets decide what is shown

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        container = self.instance
        starting = (
            container.pk
            and "desired_state" in self.changed_data
            and data.get("desired_state") == Container.DesiredState.RUNNING
        )
        quota = ResourceQuota.objects.filter(user_id=container.user_id).first()
        if starting and quota is not None:
            refusal = quota.refusal_for(container.container_type, new_container=False)
            if refusal is not None:
                self.add_error("desired_state", refusal.message)
        return data


@admin.register(Container)
class ContainerAdmin(ShownNamesAdmin):
    list_display = (
        "name",
        "user",
        "container_type",
        "node",
        "desired_state",
        "status",
        "status_reason",
        "idle_for",
        "reconcile_attempts",
        "created_at",
    )
    list_filter = ("desired_state", "status", "idle_suspended", "container_type", "node")
    search_fields = ("name", "user__username", "instance_id")
    list_select_related = ("user", "container_type", "node")
    readonly_fields = (
        "instance_id",
        "quota",
        "status",
        "status_reason",
        "status_changed_at",
        "reconcile_attempts",
        "last_error",
        "next_attempt_at",
        "deleted_at",
        "suspended",
        "last_boot",
        "last_active_at",
        "idle_for",
        "idle_suspended",
        "idle_policy",
        "created_at",
        "updated_at",
    )
    actions = ("power_on", "power_off")

    @admin.display(description="idle for")
    def idle_for(self, obj: Container) -> str:
        """Time since the last API call or open socket (from the row: no query)."""
        if obj.idle_suspended:
            return "suspended (idle)"
        if obj.status != Container.Status.RUNNING:
            return "-"
        return _duration(timezone.now() - idle.last_activity(obj))

    @admin.display(description="idle policy")
    def idle_policy(self, obj: Container) -> str:
        minutes = idle.idle_suspend_minutes()
        if not minutes:
            return "never suspended for idleness (Config idle_suspend_minutes = 0)"
        return (
            f"suspended after {minutes} min without an API call or open socket "
            "(Config idle_suspend_minutes); the next use resumes it"
        )

    form = ContainerAdminForm

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Containers are created only by ``services.container_create`` (quota, cap, credits,
        placement), which the API calls; a bare admin insert would skip all of it."""
        return False

    def _apply_desired(self, request: HttpRequest, container: Container, state: str) -> bool:
        """The API's service (credit check under the quota lock, reconcile request), audited;
        a refusal becomes an admin error message."""
        action = POWER_ACTIONS[state]
        try:
            with _audited_service(request, action, target_type="container", target_id=container.pk):
                services.container_set_desired_state(container, state)
        except DomainError as error:
            self.message_user(
                request, f"{container} was not changed: {error.message}", messages.ERROR
            )
            return False
        return True

    def _set_desired(self, request: HttpRequest, queryset: QuerySet[Container], state: str) -> None:
        done = sum(self._apply_desired(request, container, state) for container in queryset)
        if done:
            self.message_user(request, f"{done} container(s) set to {state}; reconcile requested.")

    def save_model(
        self, request: HttpRequest, obj: Container, form: forms.ModelForm, change: bool
    ) -> None:
        """An edited ``desired_state`` goes through the power service, like the API's."""
        if not (change and "desired_state" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        wanted = obj.desired_state
        obj.desired_state = form.initial["desired_state"]
        super().save_model(request, obj, form, change)
        self._apply_desired(request, obj, wanted)

    @admin.action(description="Power on (desired running)")
    def power_on(self, request: HttpRequest, queryset: QuerySet[Container]) -> None:
        self._set_desired(request, queryset, Container.DesiredState.RUNNING)

    @admin.action(description="Power off (desired stopped)")
    def power_off(self, request: HttpRequest, queryset: QuerySet[Container]) -> None:
        self._set_desired(request, queryset, Container.DesiredState.STOPPED)


class NodeForm(forms.ModelForm):
    """The agent token is write-only: never rendered back, kept when left blank.

    Pointing the node somewhere else (address, port, TLS) sends the token there on the next
    heartbeat, so that change needs the token entered again.
    """

    auth_token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Bearer token of the node agent. Leave blank to keep the current one.",
    )

    class Meta:
        model = Node
        fields = (
            "name",
            "address",
            "port",
            "use_tls",
            "auth_token",
            "arch",
            "kvm_available",
            "capacity_vcpus",
            "capacity_mem_mb",
            "cpu_allocation_ratio",
            "ram_allocation_ratio",
            "disk_allocation_ratio",
            "healthy",
            "active",
        )

    def clean_auth_token(self) -> str:
        token = self.cleaned_data.get("auth_token", "")
        if token:
            return token
        if not self.instance.pk:
            raise forms.ValidationError("A new node needs its agent token.")
        moved = sorted(set(self.changed_data) & set(TOKEN_DESTINATION_FIELDS))
        if moved:
            raise forms.ValidationError(
                f"Changing {', '.join(moved)} sends the token to the new place: "
                "enter the agent token again."
            )
        return self.instance.auth_token


# Where the node's token is sent: changing any of these needs the token entered again.
TOKEN_DESTINATION_FIELDS = ("address", "port", "use_tls")


@admin.register(Node)
class NodeAdmin(SecretFieldsAdmin):
    form = NodeForm
    secret_fields = ("auth_token",)
    list_display = (
        "name",
        "agent_url",
        "arch",
        "kvm_available",
        "capacity_vcpus",
        "capacity_mem_mb",
        "free_disk_mb",
        "guest_isolation",
        "healthy",
        "heartbeat_at",
        "active",
    )
    list_filter = ("healthy", "active", "arch", "kvm_available", "guest_isolation")
    search_fields = ("name", "address")
    readonly_fields = (
        "capacity_disk_mb",
        "free_disk_mb",
        "guest_isolation",
        "heartbeat_at",
        "last_error",
        "created_at",
    )


class FileTemplateItemInline(admin.TabularInline):
    model = FileTemplateItem
    extra = 1


@admin.register(FileTemplate)
class FileTemplateAdmin(ShownNamesAdmin):
    markup_free_fields = ("description",)
    list_display = ("name", "slug", "public", "items_count", "updated_at")
    list_filter = ("public",)
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}  # noqa: RUF012 - Django's documented form
    inlines = (FileTemplateItemInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[FileTemplate]:
        from django.db.models import Count

        return super().get_queryset(request).annotate(n_items=Count("items"))

    @admin.display(description="items", ordering="n_items")
    def items_count(self, obj: Any) -> int:
        return obj.n_items


class TeamMembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 1
    autocomplete_fields = ("user",)


@admin.register(Team)
class TeamAdmin(ShownNamesAdmin):
    list_display = ("name", "owner", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "owner__username")
    list_select_related = ("owner",)
    inlines = (TeamMembershipInline,)


@admin.register(TeamMembership)
class TeamMembershipAdmin(admin.ModelAdmin):
    list_display = ("team", "user", "role", "active", "created_at")
    list_filter = ("role", "active")
    search_fields = ("team__name", "user__username")
    list_select_related = ("team", "user")
