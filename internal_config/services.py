"""Config reads and seeding.

Entry points: ``config_get``, ``config_get_int``, ``config_set``, ``config_seed_defaults``.
"""

from __future__ import annotations

from internal_config.defaults import CONFIG_DEFAULTS
from internal_config.models import Config


def config_get(name: str, default: str | None = None) -> str | None:
    return Config.get_config_value(name, default=default)


def config_get_int(name: str, default: int) -> int:
    raw = Config.get_config_value(name)
    try:
        return int(str(raw).strip()) if raw is not None else default
    except ValueError:
        return default


def config_set(name: str, value: str) -> Config:
    """Store ``value`` under ``name`` (creating the row when it is missing)."""
    row, created = Config.objects.get_or_create(name=name, defaults={"value": value})
    if not created and row.value != value:
        row.value = value
        row.save(update_fields=["value", "updated_at"])
    return row


def config_seed_defaults() -> int:
    """Insert the default rows that are missing; return how many were created."""
    existing = set(
        Config.objects.filter(name__in=[d.name for d in CONFIG_DEFAULTS]).values_list(
            "name", flat=True
        )
    )
    missing = [
        Config(name=d.name, value=d.value, description=d.description)
        for d in CONFIG_DEFAULTS
        if d.name not in existing
    ]
    Config.objects.bulk_create(missing, ignore_conflicts=True)
    return len(missing)
