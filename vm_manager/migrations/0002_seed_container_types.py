"""Seed the default catalog on the first migrate, only when no types exist."""

from django.db import migrations

DEFAULT_TYPES = (
    {"container_type_name": "small", "vcpus": 1, "memory_mb": 1024, "disk_gib": 5, "credits_cost": 1},
    {"container_type_name": "medium", "vcpus": 2, "memory_mb": 2048, "disk_gib": 10, "credits_cost": 2},
    {"container_type_name": "large", "vcpus": 4, "memory_mb": 4096, "disk_gib": 25, "credits_cost": 4},
)


def seed_container_types(apps, schema_editor):
    ContainerType = apps.get_model("vm_manager", "ContainerType")
    if ContainerType.objects.using(schema_editor.connection.alias).exists():
        return
    ContainerType.objects.using(schema_editor.connection.alias).bulk_create(
        ContainerType(**fields) for fields in DEFAULT_TYPES
    )


class Migration(migrations.Migration):
    dependencies = [("vm_manager", "0001_initial")]

    operations = [migrations.RunPython(seed_container_types, migrations.RunPython.noop)]
