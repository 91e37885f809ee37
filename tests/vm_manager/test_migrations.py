from django.core.management import call_command

from internal_config.models import Config
from vm_manager.models import ContainerType

EXPECTED_TYPES = [
    ("small", 1, 1024, 5, 1),
    ("medium", 2, 2048, 10, 2),
    ("large", 4, 4096, 25, 4),
]


def _types():
    return list(
        ContainerType.objects.order_by("credits_cost").values_list(
            "container_type_name", "vcpus", "memory_mb", "disk_gib", "credits_cost"
        )
    )


def test_first_migrate_seeds_exactly_the_three_default_types(db):
    assert _types() == EXPECTED_TYPES


def test_first_migrate_seeds_the_config_defaults(db):
    assert set(Config.objects.values_list("name", flat=True)) == {
        "token_input_price",
        "token_output_price",
        "default_ai_use_per_day",
        "default_credits",
        "max_containers_per_user",
        "idle_suspend_minutes",
        "openai_model",
        "openai_api_url",
        "openai_api_key",
    }


def test_migrating_again_changes_nothing(db):
    before = (_types(), list(Config.objects.values_list("name", "value")))

    call_command("migrate", verbosity=0)

    assert (_types(), list(Config.objects.values_list("name", "value"))) == before


def test_migrating_again_keeps_an_edited_config_value(db):
    Config.objects.filter(name="openai_model").update(value="gpt-4o")
    Config.objects.filter(name="default_credits").delete()

    call_command("migrate", verbosity=0)

    assert Config.get_config_value("openai_model") == "gpt-4o"
    assert Config.get_config_value("default_credits") == "3"


def test_type_seeding_is_skipped_when_types_exist(db):
    from importlib import import_module
    from types import SimpleNamespace

    from django.apps import apps as global_apps
    from django.db import connection

    seed = import_module("vm_manager.migrations.0002_seed_container_types")
    ContainerType.objects.exclude(container_type_name="small").delete()

    seed.seed_container_types(global_apps, SimpleNamespace(connection=connection))

    assert list(ContainerType.objects.values_list("container_type_name", flat=True)) == ["small"]


def test_models_and_migrations_agree(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
