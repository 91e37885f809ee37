"""Migration 0011: names saved before vm_manager/names.py's rule are made to follow it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from vm_manager.names import display_name_validator

BEFORE = ("vm_manager", "0004_container_reconcile_claim")
AFTER = ("vm_manager", "0007_constrain_existing_names")


@pytest.fixture
def old_schema(transactional_db: Any) -> Iterator[Any]:
    """The app registry as of the migration before; the database ends at the latest state."""
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([BEFORE])
    yield executor.loader.project_state([BEFORE]).apps
    executor = MigrationExecutor(connection)
    executor.migrate(latest)


def migrate_forward() -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([AFTER])
    return executor.loader.project_state([AFTER]).apps


def test_disallowed_characters_become_dashes_and_names_stay_unique(old_schema) -> None:
    user_model = old_schema.get_model("auth", "User")
    container = old_schema.get_model("vm_manager", "Container")
    container_type = old_schema.get_model("vm_manager", "ContainerType")
    template = old_schema.get_model("vm_manager", "FileTemplate")
    team = old_schema.get_model("vm_manager", "Team")
    ada = user_model.objects.create(username="ada")
    bob = user_model.objects.create(username="bob")
    kind = container_type.objects.create(
        container_type_name="tiny<1>", memory_mb=512, vcpus=1, disk_gib=1
    )
    container_type.objects.create(container_type_name="tiny-1-", memory_mb=512, vcpus=1, disk_gib=1)
    made = {
        "ada-script": container.objects.create(user=ada, container_type=kind, name="<script>x"),
        "ada-plain": container.objects.create(user=ada, container_type=kind, name="-script-x"),
        "bob-script": container.objects.create(user=bob, container_type=kind, name="<script>x"),
        "blank": container.objects.create(user=bob, container_type=kind, name=""),
        "kept": container.objects.create(user=bob, container_type=kind, name="héllo wörld_1.2"),
    }
    bad_template = template.objects.create(name='a"b', slug="a-b")
    bad_team = team.objects.create(name="", owner=ada)
    amp_team = team.objects.create(name="R&D", owner=ada)

    apps = migrate_forward()

    container = apps.get_model("vm_manager", "Container")
    names = {key: container.objects.get(pk=row.pk).name for key, row in made.items()}
    assert names == {
        "ada-script": "-script-x-2",  # "-script-x" is already ada's
        "ada-plain": "-script-x",
        "bob-script": "-script-x",  # another user's names are another scope
        "blank": "",
        "kept": "héllo wörld_1.2",
    }
    types = apps.get_model("vm_manager", "ContainerType").objects
    assert types.get(pk=kind.pk).container_type_name == "tiny-1--2"
    assert (
        apps.get_model("vm_manager", "FileTemplate").objects.get(pk=bad_template.pk).name == "a-b"
    )
    teams = apps.get_model("vm_manager", "Team").objects
    assert teams.get(pk=bad_team.pk).name == f"team-{bad_team.pk}"
    assert teams.get(pk=amp_team.pk).name == "R-D"
    for value in [*names.values(), types.get(pk=kind.pk).container_type_name]:
        if value:
            display_name_validator(value)
