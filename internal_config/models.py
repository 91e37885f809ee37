from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import models


class Config(models.Model):
    name = models.CharField(max_length=100, unique=True)
    value = models.TextField(blank=True)
    description = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def get_config_value(cls, name: str, default: str | None = None) -> str | None:
        value = cls.objects.filter(name=name).values_list("value", flat=True).first()
        return default if value is None else value

    @classmethod
    def get_config_values(cls, names: list[str] | tuple[str, ...]) -> dict[str, str | None]:
        found = dict(cls.objects.filter(name__in=names).values_list("name", "value"))
        return {name: found.get(name) for name in names}


class AuditLog(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_logs",
    )
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    message = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    success = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = (
            models.Index(fields=("user", "created_at"), name="auditlog_user_created"),
            models.Index(fields=("action", "created_at"), name="auditlog_action_created"),
            models.Index(fields=("target_type", "target_id"), name="auditlog_target"),
        )

    def __str__(self) -> str:
        outcome = "ok" if self.success else "failed"
        return f"{self.action} ({outcome})"


class AuditSpoolSegment(models.Model):
    """A spool file of deferred audit rows whose rows are in ``AuditLog``: its name is written
    in the same transaction as its rows, so it is never ingested twice
    (``internal_config.audit_batch``)."""

    name = models.CharField(max_length=128, unique=True)
    rows = models.PositiveIntegerField(default=0)
    ingested_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class TokenPrices:
    input: Decimal
    output: Decimal

    @classmethod
    def current(cls) -> TokenPrices:
        values = Config.get_config_values(["token_input_price", "token_output_price"])
        return cls(
            input=_price(values["token_input_price"]),
            output=_price(values["token_output_price"]),
        )


@dataclass(frozen=True)
class RequestPrice:
    cost_input: Decimal
    cost_output: Decimal
    total_cost: Decimal


def _price(raw: str | None) -> Decimal:
    try:
        return Decimal(raw or "0")
    except InvalidOperation:
        return Decimal(0)


class AIUsageLog(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ai_usage_logs"
    )
    container = models.ForeignKey(
        "vm_manager.Container",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ai_usage_logs",
    )
    query = models.TextField()
    response = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = (models.Index(fields=("user", "created_at"), name="aiusage_user_created"),)

    def __str__(self) -> str:
        return f"AI use by {self.user_id} at {self.created_at:%Y-%m-%d %H:%M}"

    def get_price_breakdown(self, prices: TokenPrices | None = None) -> RequestPrice:
        prices = prices or TokenPrices.current()
        cost_input = prices.input * self.prompt_tokens
        cost_output = prices.output * self.completion_tokens
        return RequestPrice(cost_input, cost_output, cost_input + cost_output)

    def get_request_price(self, prices: TokenPrices | None = None) -> Decimal:
        return self.get_price_breakdown(prices).total_cost


class AIMemory(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ai_memories"
    )
    container = models.ForeignKey(
        "vm_manager.Container", on_delete=models.CASCADE, related_name="ai_memories"
    )
    memory = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("user", "container"), name="aimemory_user_container"),
        )
        verbose_name_plural = "AI memories"

    def __str__(self) -> str:
        return f"memory of {self.user_id} on container {self.container_id}"

    def message_count(self) -> int:
        memory: Any = self.memory
        return len(memory) if isinstance(memory, list) else 0
