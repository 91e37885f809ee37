"""The seeded ``default`` template holds what the upstream IDE reads on every open."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.db import connection

from vm_manager.models import FileTemplate, FileTemplateItem

pytestmark = pytest.mark.django_db

migration = importlib.import_module("vm_manager.migrations.0005_default_template_ide_files")


def items() -> dict[str, str]:
    template = FileTemplate.objects.get(slug="default")
    return {item.path: item.content for item in template.items.all()}


def run_button_accepts(content: str) -> bool:
    """The upstream IDEs' rule (runConfig.js): a JSON object with a non-empty ``run`` string,
    and ``port``, when present, a number or string that parses to 1-65535."""
    config = json.loads(content)
    if not isinstance(config, dict) or not isinstance(config.get("run"), str):
        return False
    if not config["run"].strip():
        return False
    if "port" in config:
        return str(config["port"]).isdigit() and 0 < int(config["port"]) < 65536
    return True


def test_the_default_template_keeps_its_files_and_gains_config_json_and_readme_txt():
    assert set(items()) == {"README.md", ".editorconfig", "config.json", "readme.txt"}


def test_its_config_json_is_accepted_by_the_run_button():
    assert run_button_accepts(items()["config.json"])


def test_a_config_json_edited_by_staff_is_kept_when_the_migration_runs_again():
    template = FileTemplate.objects.get(slug="default")
    FileTemplateItem.objects.filter(template=template, path="config.json").update(
        content='{"run": "npm start"}'
    )
    FileTemplateItem.objects.filter(template=template, path="readme.txt").delete()

    migration.add_ide_files(django_apps, SimpleNamespace(connection=connection))

    assert items()["config.json"] == '{"run": "npm start"}'
    assert items()["readme.txt"] == migration.README_TXT
