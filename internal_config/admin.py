from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from internal_config.defaults import SECRET_CONFIG_NAMES, SECRET_DESTINATIONS
from internal_config.models import AIMemory, AIUsageLog, AuditLog, Config, TokenPrices
from internal_config.services import config_set
from pequeroku.admin import SecretFieldsAdmin

MASK = "••••••••"


class ConfigForm(forms.ModelForm):
    """Secret values are write-only: shown masked, kept when the field is left blank.

    A row that says where a secret goes (``SECRET_DESTINATIONS``: the provider URL) has a
    second field for that secret, required when the value changes, so the stored key is never
    sent to a new place by someone who does not know it.
    """

    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="API key",
        help_text="Required when the URL changes: the key is sent to the new URL.",
    )

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
        if self.secret_name is None:
            del self.fields["secret"]

    @property
    def secret_name(self) -> str | None:
        return SECRET_DESTINATIONS.get(self.instance.name) if self.instance.pk else None

    def clean_value(self) -> str:
        value = self.cleaned_data.get("value", "")
        if not value and self.instance.pk and self.instance.name in SECRET_CONFIG_NAMES:
            return self.instance.value
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.secret_name and "value" in self.changed_data and not cleaned.get("secret"):
            self.add_error(
                "secret",
                f"Changing this sends {self.secret_name} to the new place: "
                "enter the API key again.",
            )
        return cleaned


@admin.register(Config)
class ConfigAdmin(SecretFieldsAdmin):
    form = ConfigForm
    list_display = ("name", "shown_value", "description", "updated_at")
    search_fields = ("name", "description")
    # Any row's value: a lookup on it would reveal the secret rows' values by prefix.
    secret_fields = ("value",)

    @admin.display(description="value")
    def shown_value(self, obj: Config) -> str:
        return MASK if obj.name in SECRET_CONFIG_NAMES else obj.value

    def hidden_secret_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None or obj.name not in SECRET_CONFIG_NAMES:
            return ()
        return super().hidden_secret_fields(request, obj)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = [name for name in super().get_fields(request, obj) if name != "secret"]
        if (
            obj is not None
            and obj.name in SECRET_DESTINATIONS
            and self.has_change_permission(request, obj)
        ):
            fields.append("secret")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = tuple(super().get_readonly_fields(request, obj))
        # Masking goes by name: renaming a secret row would unmask it.
        if obj is not None and obj.name in SECRET_CONFIG_NAMES:
            readonly += ("name",)
        return readonly

    def save_model(self, request: HttpRequest, obj: Config, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        secret = form.cleaned_data.get("secret")
        if secret and form.secret_name:
            config_set(form.secret_name, secret)


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
