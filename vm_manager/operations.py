"""Reaching a container's VM: the driver of its node, only while it can answer.

Entry points: ``driver_for(container)``, ``template_apply(template, container, ...)``.
"""

from __future__ import annotations

import contextlib
import posixpath

from vm_manager.drivers import WORKSPACE_ROOT, GuestFileNotFound, NodeDriver, get_node_driver
from vm_manager.drivers.paths import workspace_path
from vm_manager.errors import ContainerNotRunning
from vm_manager.models import Container, FileTemplate


def driver_for(container: Container) -> NodeDriver:
    """The node driver of a container that is placed and meant to run."""
    if container.node_id is None or container.deleted_at is not None:
        raise ContainerNotRunning("The container has no VM yet.")
    return get_node_driver(container.node)  # type: ignore[arg-type]


def template_items(template: FileTemplate) -> list[tuple[str, str, int]]:
    return [(item.path, item.content, item.mode) for item in template.items.all()]


async def template_apply(
    template: FileTemplate,
    container: Container,
    items: list[tuple[str, str, int]],
    dest_path: str = WORKSPACE_ROOT,
    clean: bool = True,
) -> int:
    """Write ``items`` ((path, content, mode), already read from ``template``) under ``dest_path``.

    ``clean`` removes what is at the items' own paths first (never the whole folder), so
    applying a template never wipes unrelated work. Returns the number of files written.
    """
    driver = driver_for(container)
    root = workspace_path(dest_path)
    for relative, content, mode in items:
        target = workspace_path(posixpath.join(root, relative.lstrip("/")))
        if clean:
            with contextlib.suppress(GuestFileNotFound):
                await driver.delete_path(container.vm_id, target)
        await driver.write_file(container.vm_id, target, content.encode(), mode)
    return len(items)
