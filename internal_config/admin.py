from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from internal_config.defaults import SECRET_CONFIG_NAMES
from internal_config.models import AIMemory, AIUsageLog, AuditLog, Config, TokenPrices

MASK = "••••••••"


class ConfigForm(forms.ModelForm):
    """Secret values are write-only: shown masked, kept when the field is left blank."""

    class Meta:
        model = Config
        fields = ("name", "value", "description")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.name in SECRET_CONFIG_NAMES:
            self.fields["value"] = forms.CharField(
                required=False,
                widget=forms.PasswordInput(render_value=False),
                help_text="Secret: leave blank to keep the current value.",
            )

    def clean_value(self) -> str:
        value = self.cleaned_data.get("value", "")
        if not value and self.instance.pk and self.instance.name in SECRET_CONFIG_NAMES:
            return self.instance.value
        return value


@admin.register(Config)
class ConfigAdmin(admin.ModelAdmin):
    form = ConfigForm
    list_display = ("name", "shown_value", "description", "updated_at")
    search_fields = ("name", "description")

    @admin.display(description="value")
    def shown_value(self, obj: Config) -> str:
        return MASK if obj.name in SECRET_CONFIG_NAMES else obj.value


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """An audit trail is read-only: no add, change or delete."""

    list_display = ("created_at", "action", "user", "target_type", "target_id", "success", "ip")
    list_filter = ("success", "action", "target_type", "created_at")
    search_fields = ("action", "message", "user__username", "target_id", "ip")
    list_select_related = ("user",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AIUsageLog)
class AIUsageLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "container", "model", "total_cost")
    list_filter = ("model", "created_at")
    search_fields = ("user__username", "query", "response")
    list_select_related = ("user", "container")
    date_hierarchy = "created_at"
    readonly_fields = (
        "user",
        "container",
        "model",
        "query",
        "response",
        "prompt_tokens",
        "completion_tokens",
        "created_at",
        "cost_input",
        "cost_output",
        "total_cost",
    )
    _prices: TokenPrices | None = None

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # One price lookup for the whole page instead of one per row.
        self._prices = TokenPrices.current()
        try:
            return super().changelist_view(request, extra_context)
        finally:
            self._prices = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="cost input")
    def cost_input(self, obj: AIUsageLog) -> str:
        return f"{obj.get_price_breakdown(self._prices).cost_input:.8f}"

    @admin.display(description="cost output")
    def cost_output(self, obj: AIUsageLog) -> str:
        return f"{obj.get_price_breakdown(self._prices).cost_output:.8f}"

    @admin.display(description="total cost")
    def total_cost(self, obj: AIUsageLog) -> str:
        return f"{obj.get_request_price(self._prices):.8f}"


@admin.register(AIMemory)
class AIMemoryAdmin(admin.ModelAdmin):
    list_display = ("user", "container", "message_count", "updated_at")
    search_fields = ("user__username", "container__name")
    list_select_related = ("user", "container")
    readonly_fields = ("updated_at",)
