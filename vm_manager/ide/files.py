"""The file editor's operations on a container's ``/app``: revisions, broadcasts, search.

Entry points: ``Editor`` (one per editor socket: ``list_dirs``, ``read_file``, ``create_dir``,
``write_file``, ``move_path``, ``delete_path``, ``search``), ``workspace_initialize_once``.

Every path goes through ``workspace_path`` (``..`` and absolute escapes refused here); symlink
escapes are refused by the node, which resolves paths inside the guest. A write goes through
``GuestFiles.write``, the write path every other writer (REST, templates, the AI) shares; a
change bumps the path's revision in the shared ``RevisionStore`` and returns the event to
broadcast to every editor of the container; the socket layer only sends it. Reads are bounded
at the node (``MAX_READ_BYTES``) and listings capped (``MAX_DIR_ENTRIES`` a folder).
"""

from __future__ import annotations

import codecs
import posixpath
from dataclasses import dataclass, field
from typing import Any, TypedDict

from channels.db import database_sync_to_async

from pequeroku.errors import DomainError
from vm_manager.drivers import WORKSPACE_ROOT, GuestFileNotFound, NodeDriver
from vm_manager.guest.files import MAX_DIR_ENTRIES, GuestFiles, RevisionConflict
from vm_manager.guest.paths import relative_to_workspace, workspace_path
from vm_manager.guest.revisions import RevisionStore
from vm_manager.guest.search import (
    DEFAULT_EXCLUDED_DIRS,
    EXIT_NOT_A_DIRECTORY,
    EXIT_OUTSIDE_WORKSPACE,
    SEARCH_MAX_FILTERS,
    SEARCH_MAX_LINE,
    SEARCH_MAX_PATTERN,
    SEARCH_MAX_PER_FILE,
    SEARCH_MAX_RESULTS,
    SEARCH_TIMEOUT,
    SearchHit,
    parse_search_output,
    search_command,
)
from vm_manager.guest.templates import template_apply, template_items
from vm_manager.models import Container, FileTemplate

MAX_READ_BYTES = 2 * 1024 * 1024  # larger files are downloaded, not opened in the editor
MAX_WRITE_BYTES = 2 * 1024 * 1024
MAX_LIST_PATHS = 64
DEFAULT_TEMPLATE_SLUG = "default"


class EditorError(DomainError):
    code = "editor_error"
    default_message = "The editor request failed."


class DirEntry(TypedDict):
    path: str
    name: str
    path_type: str


@dataclass
class EditorResult:
    """What an action answers (``data``/``rev`` of the ok event) and what it broadcasts."""

    data: Any = None
    rev: int | None = None
    broadcast: dict[str, Any] | None = None
    audit: dict[str, Any] = field(default_factory=dict)


def _path(value: object, name: str = "path") -> str:
    if not isinstance(value, str) or not value.strip():
        raise EditorError(f"'{name}' must be a non-empty string")
    return workspace_path(value.strip())


def _text_list(value: object, name: str) -> list[str]:
    """A list of strings, or a comma-separated string (the frontend sends both)."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise EditorError(f"'{name}' must be a list of strings")
    cleaned = [item.strip() for item in items if item.strip()]
    if len(cleaned) > SEARCH_MAX_FILTERS or any(len(item) > 100 for item in cleaned):
        raise EditorError(f"'{name}' is too long")
    return cleaned


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


@dataclass
class Editor:
    container_pk: int
    vm_id: str
    driver: NodeDriver
    revisions: RevisionStore

    @property
    def files(self) -> GuestFiles:
        return GuestFiles(self.container_pk, self.vm_id, self.driver, self.revisions)

    async def list_dirs(self, path: object) -> EditorResult:
        """Each folder's entries; a folder with more than ``MAX_DIR_ENTRIES`` is cut there and
        named in ``truncated`` (empty when nothing was cut)."""
        raw = path if isinstance(path, str) and path.strip() else WORKSPACE_ROOT
        paths = list(dict.fromkeys(_path(part or WORKSPACE_ROOT) for part in raw.split(",")))
        if len(paths) > MAX_LIST_PATHS:
            raise EditorError(f"at most {MAX_LIST_PATHS} paths per request")
        entries: list[DirEntry] = []
        truncated: list[str] = []
        for directory in paths:
            try:
                listing = await self.files.listing(directory, MAX_DIR_ENTRIES)
            except GuestFileNotFound:
                continue  # a folder the client still shows but that is gone: nothing in it
            if listing.truncated:
                truncated.append(directory)
            entries.extend(
                DirEntry(
                    path=entry["path"],
                    name=entry["name"],
                    path_type="directory" if entry["path_type"] == "directory" else "file",
                )
                for entry in listing.entries
            )
        return EditorResult(data={"entries": entries, "path": paths, "truncated": truncated})

    async def read_file(self, path: object) -> EditorResult:
        """At most ``MAX_READ_BYTES`` leave the node; a larger file is an error event."""
        target = _path(path)
        name = posixpath.basename(target)
        rev = await self.revisions.get(self.container_pk, target)
        try:
            raw = await self.files.read(target, MAX_READ_BYTES)
        except GuestFileNotFound:
            data = {"name": name, "content": "", "length": 0, "found": False, "rev": rev}
            return EditorResult(data=data)
        content = codecs.decode(raw, "utf-8", errors="replace")
        data = {"name": name, "content": content, "length": len(content), "found": True}
        data["rev"] = rev
        return EditorResult(data=data)

    async def create_dir(self, path: object) -> EditorResult:
        target = _path(path)
        await self.driver.make_dir(self.vm_id, target)
        rev = await self.files.touched(target)
        event = {"event": "file_changed", "path": target, "rev": rev, "meta": {"op": "create_dir"}}
        return EditorResult(rev=rev, broadcast=event, audit={"path": target})

    async def write_file(self, path: object, content: object, prev_rev: object) -> EditorResult:
        target = _path(path)
        if not isinstance(content, str):
            raise EditorError("'content' must be a string")
        body = content.encode()
        if len(body) > MAX_WRITE_BYTES:
            raise EditorError(f"content is larger than {MAX_WRITE_BYTES // (1024 * 1024)} MiB")
        expected = await self._expected_rev(target, prev_rev)
        event = await self.files.write(target, body, op="write_file", expected=expected)
        rev = int(event["rev"])
        return EditorResult(rev=rev, broadcast=event, audit={"path": target, "bytes": len(body)})

    async def _expected_rev(self, target: str, prev_rev: object) -> int | None:
        """``None`` writes unconditionally; otherwise the revision the client last saw."""
        if prev_rev is None or prev_rev == "":
            return None
        if isinstance(prev_rev, bool) or not isinstance(prev_rev, int | str):
            raise EditorError("'prev_rev' must be an integer")
        try:
            expected = int(prev_rev)
        except ValueError:
            raise EditorError("'prev_rev' must be an integer") from None
        current = await self.revisions.get(self.container_pk, target)
        if expected == 0 and current != 0 and not await self.files.exists(target):
            # A new file at a path that once existed (deleted or moved away): nothing to lose.
            return current
        return expected

    async def move_path(self, src: object, dst: object) -> EditorResult:
        source, target = _path(src, "src"), _path(dst, "dst")
        if WORKSPACE_ROOT in (source, target):
            raise EditorError(f"cannot move {WORKSPACE_ROOT} itself")
        await self.driver.move_path(self.vm_id, source, target)
        await self.files.touched(source)
        rev = await self.files.touched(target)
        event = {"event": "path_moved", "src": source, "dst": target, "rev": rev}
        return EditorResult(rev=rev, broadcast=event, audit={"src": source, "dst": target})

    async def delete_path(self, path: object) -> EditorResult:
        target = _path(path)
        if target == WORKSPACE_ROOT:
            raise EditorError(f"cannot delete {WORKSPACE_ROOT} itself")
        await self.driver.delete_path(self.vm_id, target)
        rev = await self.files.touched(target)
        event = {"event": "path_deleted", "path": target, "rev": rev}
        return EditorResult(rev=rev, broadcast=event, audit={"path": target})

    async def search(
        self,
        root: object,
        pattern: object,
        case: object = False,
        include_globs: object = None,
        exclude_dirs: object = None,
    ) -> EditorResult:
        base = _path(root if root not in (None, "") else WORKSPACE_ROOT, "root")
        if not isinstance(pattern, str) or not pattern:
            raise EditorError("'pattern' must be a non-empty string")
        if len(pattern) > SEARCH_MAX_PATTERN or "\n" in pattern or "\x00" in pattern:
            raise EditorError(f"'pattern' must be one line of at most {SEARCH_MAX_PATTERN} chars")
        command = search_command(
            relative_to_workspace(base),
            pattern,
            case_sensitive=_flag(case),
            include_globs=_text_list(include_globs, "include_globs"),
            exclude_dirs=[*DEFAULT_EXCLUDED_DIRS, *_text_list(exclude_dirs, "exclude_dirs")],
        )
        result = await self.driver.exec(self.vm_id, command, timeout=SEARCH_TIMEOUT + 5)
        if result["exit_code"] == EXIT_NOT_A_DIRECTORY:
            raise GuestFileNotFound(f"{base} is not a directory")
        if result["exit_code"] == EXIT_OUTSIDE_WORKSPACE:
            raise EditorError(f"{base} resolves outside {WORKSPACE_ROOT}")
        hits = parse_search_output(base, result["stdout"])
        audit = {"root": base, "pattern": pattern, "files": len(hits)}
        return EditorResult(data=hits, audit=audit)


# -- first connect: the default template, once ---------------------------------------------


def _claim_workspace(container_pk: int) -> bool:
    """Mark the workspace initialised; true for exactly one caller, on any worker."""
    return bool(
        Container.objects.filter(
            pk=container_pk,
            workspace_initialized=False,
            status=Container.Status.RUNNING,
            deleted_at__isnull=True,
        ).update(workspace_initialized=True)
    )


def _release_workspace(container_pk: int) -> None:
    Container.objects.filter(pk=container_pk).update(workspace_initialized=False)


def _default_template_items() -> list[tuple[str, str, int]]:
    template = FileTemplate.objects.filter(slug=DEFAULT_TEMPLATE_SLUG).first()
    return template_items(template) if template is not None else []


async def workspace_initialize_once(container: Container) -> int | None:
    """Apply the ``default`` template to a running, never-initialised container's ``/app``.

    Returns the number of files written, or ``None`` when another connect already did it (or
    the container is not running yet). Files that already exist are left alone, so work done
    before the first editor connect (from the console, the API) is never overwritten. A failure
    releases the claim so the next connect tries again.
    """
    if container.workspace_initialized:
        return None
    if not await database_sync_to_async(_claim_workspace)(container.pk):
        return None
    try:
        items = await database_sync_to_async(_default_template_items)()
        written = await template_apply(
            container, items, clean=False, keep_existing=True, announce=False
        )
    except BaseException:
        await database_sync_to_async(_release_workspace)(container.pk)
        raise
    container.workspace_initialized = True
    return written


__all__ = [
    "DEFAULT_TEMPLATE_SLUG",
    "MAX_READ_BYTES",
    "MAX_WRITE_BYTES",
    "SEARCH_MAX_LINE",
    "SEARCH_MAX_PER_FILE",
    "SEARCH_MAX_RESULTS",
    "SEARCH_TIMEOUT",
    "DirEntry",
    "Editor",
    "EditorError",
    "EditorResult",
    "RevisionConflict",
    "SearchHit",
    "parse_search_output",
    "search_command",
    "workspace_initialize_once",
]
