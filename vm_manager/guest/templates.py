"""File templates: writing them (audited) and applying them to a container's ``/app``.

Entry points: ``template_create``, ``template_update``, ``template_delete`` (each writes its
own audit row, attributed to an ``Actor``), ``template_apply_to_container`` (REST),
``template_apply`` (async, also the editor's first connect), ``template_items``.

Every file is written through ``GuestFiles.write``, so editors with it open get
``file_changed`` and a save with the old revision is a conflict. ``clean`` empties the
destination first, as the upstream IDE expects (it always sends ``clean: true``): each entry
of the destination is deleted by the node, which refuses anything that resolves outside
``/app`` (``..``, a destination that is a symlink out); a symlink inside the destination that
points out of ``/app`` is left in place rather than followed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.http import HttpRequest

from internal_config.audit import audit_log_ws, client_ip
from vm_manager.drivers import WORKSPACE_ROOT, GuestFileNotFound, PathNotAllowed
from vm_manager.errors import node_errors_as_domain_errors
from vm_manager.models import Container, FileTemplate, FileTemplateItem

from .access import ensure_in_use
from .files import GuestFiles, files_for, guest_path, publish, write_and_publish
from .paths import workspace_path

TemplateItem = tuple[str, str, int]  # (path relative to the destination, content, mode)


class TemplateItemData(TypedDict, total=False):
    path: str
    content: str
    mode: int
    order: int


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for its audit row."""

    user: Any
    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        return cls(
            user=request.user,
            ip=client_ip(request.META),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )


def _audit(actor: Actor, action: str, template_id: int, metadata: dict[str, Any]) -> None:
    audit_log_ws(
        action=action,
        user=actor.user,
        ip=actor.ip,
        user_agent=actor.user_agent,
        target_type="template",
        target_id=template_id,
        metadata=metadata,
    )


def _replace_items(template: FileTemplate, items: list[TemplateItemData]) -> None:
    template.items.all().delete()
    FileTemplateItem.objects.bulk_create(
        FileTemplateItem(template=template, **item) for item in items
    )


@transaction.atomic
def template_create(
    *, actor: Actor, fields: dict[str, Any], items: list[TemplateItemData] | None = None
) -> FileTemplate:
    template = FileTemplate.objects.create(**fields)
    _replace_items(template, items or [])
    _audit(
        actor, "template.create", template.pk, {"slug": template.slug, "items": len(items or [])}
    )
    return template


@transaction.atomic
def template_update(
    template: FileTemplate,
    *,
    actor: Actor,
    fields: dict[str, Any],
    items: list[TemplateItemData] | None = None,
) -> FileTemplate:
    """Change the given fields; ``items``, when given, replaces every item."""
    for name, value in fields.items():
        setattr(template, name, value)
    template.save(update_fields=[*fields, "updated_at"])
    if items is not None:
        _replace_items(template, items)
    metadata: dict[str, Any] = {"fields": sorted(fields)}
    if items is not None:
        metadata["items"] = len(items)
    _audit(actor, "template.update", template.pk, metadata)
    return template


@transaction.atomic
def template_delete(template: FileTemplate, *, actor: Actor) -> None:
    pk, slug = template.pk, template.slug
    template.delete()
    _audit(actor, "template.delete", pk, {"slug": slug})


def template_items(template: FileTemplate) -> list[TemplateItem]:
    return [(item.path, item.content, item.mode) for item in template.items.all()]


async def _empty(files: GuestFiles, layer: Any, root: str) -> None:
    """Delete what is in ``root`` (not ``root`` itself), telling open editors.

    Listed a page at a time (listings are capped); each entry is tried once, so one the node
    refuses (a symlink out of ``/app``: never followed, left alone) cannot loop forever.
    """
    tried: set[str] = set()
    while True:
        listing = await files.listing(root)
        pending = [entry["path"] for entry in listing.entries if entry["path"] not in tried]
        if not pending:
            return
        for path in pending:
            tried.add(path)
            try:
                await files.driver.delete_path(files.vm_id, path)
            except (PathNotAllowed, GuestFileNotFound):
                continue
            rev = await files.touched(path)
            await publish(
                layer, files.container_pk, {"event": "path_deleted", "path": path, "rev": rev}
            )


async def template_apply(
    container: Container,
    items: list[TemplateItem],
    dest_path: str = WORKSPACE_ROOT,
    *,
    clean: bool = False,
    keep_existing: bool = False,
    announce: bool = True,
) -> int:
    """Write ``items`` under ``dest_path``; the number of files written.

    ``clean`` empties ``dest_path`` first; ``keep_existing`` skips items whose path exists;
    ``announce=False`` bumps revisions without broadcasting (the first connect's template,
    written before any editor of the container can have a file open).
    """
    layer = get_channel_layer()
    files = files_for(container, layer)
    root = workspace_path(dest_path)
    if clean:
        await _empty(files, layer, root)
    written = 0
    for relative, content, mode in items:
        target = workspace_path(posixpath.join(root, relative.lstrip("/")))
        if keep_existing and await files.exists(target):
            continue
        if announce:
            await write_and_publish(
                files, layer, target, content.encode(), op="template", mode=mode
            )
        else:
            await files.write(target, content.encode(), op="template", mode=mode)
        written += 1
    return written


def template_apply_to_container(
    template: FileTemplate, container: Container, *, dest_path: str, clean: bool
) -> int:
    """Write the template's files under ``dest_path`` in a running container; the file count."""
    dest = guest_path(dest_path)
    ensure_in_use(container)
    items = template_items(template)
    with node_errors_as_domain_errors():
        return async_to_sync(template_apply)(container, items, dest, clean=clean)
