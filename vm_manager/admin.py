from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from pequeroku.admin import SecretFieldsAdmin
from pequeroku.errors import DomainError
from vm_manager import services
from vm_manager.models import (
    Container,
    ContainerType,
    FileTemplate,
    FileTemplateItem,
    Node,
    ResourceQuota,
    Team,
    TeamMembership,
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
    from django.db.models import Case, F, When

    held = (
        Container.objects.filter(
            user_id=OuterRef("user_id"),
            desired_state=Container.DesiredState.RUNNING,
            deleted_at__isnull=True,
        )
        .values("user_id")
        .annotate(
            total=Sum(
                Case(
                    When(container_type__isnull=True, then=Value(1)),
                    default=F("container_type__credits_cost"),
                    output_field=IntegerField(),
                )
            )
        )
        .values("total")
    )
    return Subquery(held, output_field=IntegerField())


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

    @admin.action(description="Deactivate (stops every container)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ResourceQuota]) -> None:
        for quota in queryset:
            services.quota_set_active(quota, False)
        self.message_user(request, f"Deactivated {queryset.count()} quota(s).")

    @admin.action(description="Activate")
    def activate(self, request: HttpRequest, queryset: QuerySet[ResourceQuota]) -> None:
        for quota in queryset:
            services.quota_set_active(quota, True)
        self.message_user(request, f"Activated {queryset.count()} quota(s).")


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
        "reconcile_attempts",
        "created_at",
    )
    list_filter = ("desired_state", "status", "container_type", "node")
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
        "created_at",
        "updated_at",
    )
    actions = ("power_on", "power_off")

    def _set_desired(self, request: HttpRequest, queryset: QuerySet[Container], state: str) -> None:
        done = 0
        for container in queryset:
            try:
                services.container_set_desired_state(container, state)
                done += 1
            except DomainError as error:
                self.message_user(request, f"{container}: {error.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{done} container(s) set to {state}; reconcile requested.")

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
        "healthy",
        "heartbeat_at",
        "active",
    )
    list_filter = ("healthy", "active", "arch", "kvm_available")
    search_fields = ("name", "address")
    readonly_fields = ("heartbeat_at", "last_error", "created_at")


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
