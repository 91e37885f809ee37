"""Reaching a container's VM: the driver of its node, only while it can answer.

Entry points: ``driver_for(container)``, ``template_items(template)``,
``template_apply(container, items, ...)``, ``guest_exists``.
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
    container: Container,
    items: list[tuple[str, str, int]],
    dest_path: str = WORKSPACE_ROOT,
    *,
    clean: bool = True,
    keep_existing: bool = False,
) -> int:
    """Write ``items`` ((path, content, mode), from ``template_items``) under ``dest_path``.

    ``clean`` removes what is at the items' own paths first (never the whole folder), so
    applying a template never wipes unrelated work; ``keep_existing`` instead skips items whose
    path already exists. Returns the number of files written.
    """
    driver = driver_for(container)
    root = workspace_path(dest_path)
    written = 0
    for relative, content, mode in items:
        target = workspace_path(posixpath.join(root, relative.lstrip("/")))
        if keep_existing and await guest_exists(driver, container.vm_id, target):
            continue
        if clean:
            with contextlib.suppress(GuestFileNotFound):
                await driver.delete_path(container.vm_id, target)
        await driver.write_file(container.vm_id, target, content.encode(), mode)
        written += 1
    return written


async def guest_exists(driver: NodeDriver, vm_id: str, target: str) -> bool:
    try:
        listed = await driver.list_dir(vm_id, posixpath.dirname(target))
    except GuestFileNotFound:
        return False
    return any(entry["path"] == target for entry in listed)
