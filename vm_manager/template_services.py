"""Writing file templates and applying them to a container.

Entry points: ``template_create``, ``template_update``, ``template_delete``,
``template_apply_to_container``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from django.db import transaction

from vm_manager.container_actions import ensure_in_use, guest_path, node_errors_as_domain_errors
from vm_manager.models import Container, FileTemplate, FileTemplateItem
from vm_manager.operations import template_apply, template_items


class TemplateItemData(TypedDict, total=False):
    path: str
    content: str
    mode: int
    order: int


def _replace_items(template: FileTemplate, items: list[TemplateItemData]) -> None:
    template.items.all().delete()
    FileTemplateItem.objects.bulk_create(
        FileTemplateItem(template=template, **item) for item in items
    )


@transaction.atomic
def template_create(
    *, fields: dict[str, Any], items: list[TemplateItemData] | None = None
) -> FileTemplate:
    template = FileTemplate.objects.create(**fields)
    _replace_items(template, items or [])
    return template


@transaction.atomic
def template_update(
    template: FileTemplate,
    *,
    fields: dict[str, Any],
    items: list[TemplateItemData] | None = None,
) -> FileTemplate:
    """Change the given fields; ``items``, when given, replaces every item."""
    for name, value in fields.items():
        setattr(template, name, value)
    template.save(update_fields=[*fields, "updated_at"])
    if items is not None:
        _replace_items(template, items)
    return template


@transaction.atomic
def template_delete(template: FileTemplate) -> None:
    template.delete()


def template_apply_to_container(
    template: FileTemplate, container: Container, *, dest_path: str, clean: bool
) -> int:
    """Write the template's files under ``dest_path`` in a running container; the file count."""
    dest = guest_path(dest_path)
    ensure_in_use(container)
    items = template_items(template)
    with node_errors_as_domain_errors():
        return async_to_sync(template_apply)(container, items, dest, clean=clean)
