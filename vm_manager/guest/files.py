"""Files in a container's ``/app``: the one write path, bounded reads, capped listings.

Entry points: ``GuestFiles`` (one workspace through its node: ``write``, ``read``, ``listing``,
``exists``, ``touched``), ``publish`` and ``write_and_publish`` (for writers that are not an
editor socket), ``editor_group``; for the REST API ``container_upload_file``,
``upload_target``, ``container_download`` and ``container_archive``.

Every write into ``/app`` — the editor, a REST upload, a template, the AI assistant — goes
through ``GuestFiles.write``: it claims the path's next revision in the shared
``RevisionStore`` (refusing a stale expected one) and returns the ``file_changed`` event that
every open editor of the container must get. The editor socket sends that event itself (it
answers its own client first); every other writer uses ``write_and_publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from pequeroku.errors import DomainError
from vm_manager.drivers import GuestFileNotFound, NodeDriver, NodeError
from vm_manager.drivers.base import ArchiveFormat, FileEntry
from vm_manager.errors import (
    PathOutsideWorkspace,
    UploadTooLarge,
    domain_error_for,
    node_errors_as_domain_errors,
)
from vm_manager.models import Container

from .access import driver_for, ensure_in_use, running_driver
from .paths import workspace_path
from .revisions import RevisionStore, revision_store

# A directory listing asks the node for one entry more than this to learn it was cut.
MAX_DIR_ENTRIES = 1000


def editor_group(container_pk: int) -> str:
    """The channel-layer group of every editor socket of a container."""
    return f"container-fs-{container_pk}"


class RevisionConflict(DomainError):
    status_code = 409
    code = "conflict"

    def __init__(self, rev: int) -> None:
        super().__init__("conflict")
        self.rev = rev


@dataclass
class Listing:
    entries: list[FileEntry]
    truncated: bool


@dataclass
class GuestFiles:
    container_pk: int
    vm_id: str
    driver: NodeDriver
    revisions: RevisionStore

    async def write(
        self,
        path: str,
        content: bytes,
        *,
        op: str,
        mode: int | None = None,
        expected: int | None = None,
    ) -> dict[str, Any]:
        """Write ``path`` (normalised already) and return its ``file_changed`` event.

        The next revision is claimed before writing: of two writers holding the same
        ``expected``, on any workers, exactly one gets it and the other a ``RevisionConflict``.
        ``expected=None`` writes unconditionally.
        """
        rev = await self.revisions.bump(self.container_pk, path, expected)
        if rev is None:
            raise RevisionConflict(await self.revisions.get(self.container_pk, path))
        await self.driver.write_file(self.vm_id, path, content, mode)
        meta = {"op": op, "bytes": len(content)}
        return {"event": "file_changed", "path": path, "rev": rev, "meta": meta}

    async def touched(self, path: str) -> int:
        """Bump ``path``'s revision after a change other than a write (mkdir, move, delete)."""
        rev = await self.revisions.bump(self.container_pk, path)
        assert rev is not None  # noqa: S101 - unconditional bumps always succeed
        return rev

    async def read(self, path: str, max_bytes: int) -> bytes:
        """The file, or ``GuestFileTooLarge`` from the node: it never sends more."""
        return await self.driver.read_file(self.vm_id, path, max_bytes=max_bytes)

    async def listing(self, directory: str, limit: int = MAX_DIR_ENTRIES) -> Listing:
        entries = await self.driver.list_dir(self.vm_id, directory, limit=limit + 1)
        return Listing(entries=entries[:limit], truncated=len(entries) > limit)

    async def exists(self, path: str) -> bool:
        try:
            listed = await self.driver.list_dir(self.vm_id, posixpath.dirname(path))
        except GuestFileNotFound:
            return False
        return any(entry["path"] == path for entry in listed)


async def publish(layer: Any, container_pk: int, event: dict[str, Any]) -> None:
    """Send ``event`` to every open editor of the container, on any worker."""
    await layer.group_send(editor_group(container_pk), {"type": "fs.broadcast", "payload": event})


def files_for(container: Container, layer: Any) -> GuestFiles:
    return GuestFiles(
        container_pk=container.pk,
        vm_id=container.vm_id,
        driver=driver_for(container),
        revisions=revision_store(layer),
    )


async def write_and_publish(
    files: GuestFiles, layer: Any, path: str, content: bytes, *, op: str, mode: int | None = None
) -> int:
    """The write path for writers without an editor socket; returns the new revision."""
    event = await files.write(path, content, op=op, mode=mode)
    await publish(layer, files.container_pk, event)
    return int(event["rev"])


# -- REST: upload and download -----------------------------------------------------------------


def upload_target(dest_path: str, filename: str) -> str:
    """Where an uploaded file lands: ``dest_path`` (a folder) joined with the file's base name."""
    name = posixpath.basename(filename.replace("\\", "/"))
    if name in ("", ".", ".."):
        raise PathOutsideWorkspace("The uploaded file needs a name.")
    with node_errors_as_domain_errors():
        folder = workspace_path(dest_path)
        return workspace_path(posixpath.join(folder, name))


def container_upload_file(container: Container, path: str, content: bytes) -> str:
    """Write an uploaded file through the write path (open editors learn of it)."""
    if len(content) > settings.MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"Uploads are limited to {settings.MAX_UPLOAD_BYTES} bytes.")
    ensure_in_use(container)
    layer = get_channel_layer()
    files = files_for(container, layer)
    with node_errors_as_domain_errors():
        async_to_sync(write_and_publish)(files, layer, path, content, op="upload_file")
    return path


async def _first_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return b""
    except NodeError as exc:
        raise domain_error_for(exc) from exc


async def _rest(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    try:
        async for chunk in chunks:
            yield chunk
    except NodeError as exc:
        # Headers are gone already: the client sees a truncated body.
        raise domain_error_for(exc) from exc


class LoopStream:
    """A sync iterator over an async one, on an event loop of its own (WSGI, test client)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._loop = asyncio.new_event_loop()
        self._chunks = chunks
        self._closed = False
        try:
            self._first = self._loop.run_until_complete(_first_chunk(chunks))
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self._first:
                yield self._first
            while not self._closed:
                try:
                    chunk = self._loop.run_until_complete(anext(self._chunks))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    break
                except NodeError as exc:
                    raise domain_error_for(exc) from exc
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._chunks.aclose())  # type: ignore[attr-defined]
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __del__(self) -> None:
        # Servers close responses; a caller that drops one unread must not leak the loop.
        if not self._closed:
            self._closed = True
            self._loop.close()


def _streamed(
    open_chunks: Callable[[], AsyncIterator[bytes]], *, asynchronous: bool
) -> AsyncIterator[bytes] | LoopStream:
    """A node stream for a response body; errors before the first byte are raised here.

    ``asynchronous`` (under ASGI) gives an async iterator that runs on the server's loop, so
    it streams; otherwise a ``LoopStream`` that a WSGI server or the test client can iterate.
    """
    if not asynchronous:
        with node_errors_as_domain_errors():
            return LoopStream(open_chunks())
    chunks = open_chunks()

    async def first() -> bytes:
        return await _first_chunk(chunks)

    return _rest(async_to_sync(first)(), chunks)


def container_download(
    container: Container, path: str, *, asynchronous: bool
) -> AsyncIterator[bytes] | LoopStream:
    """The file at ``path`` (normalised already) as a stream, never held whole in memory."""
    driver = running_driver(container)
    return _streamed(
        lambda: driver.read_file_stream(container.vm_id, path), asynchronous=asynchronous
    )


def container_archive(
    container: Container, root: str, fmt: ArchiveFormat, *, asynchronous: bool
) -> AsyncIterator[bytes] | LoopStream:
    """The archive of ``root`` (normalised already) as a stream."""
    driver = running_driver(container)
    return _streamed(lambda: driver.archive(container.vm_id, root, fmt), asynchronous=asynchronous)


def guest_path(path: str) -> str:
    """``path`` normalised inside ``/app`` for a request, or a 400 that says why."""
    with node_errors_as_domain_errors():
        return workspace_path(path)
