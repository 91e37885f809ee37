"""What the REST API does inside a container's VM, through its node's driver.

Entry points: ``container_exec``, ``container_upload_file``, ``container_read_file``,
``container_archive``, ``container_statistics``, ``container_restart``; ``ensure_running``
and ``guest_path`` for other services that act inside a VM.

Each one needs the container placed and meant to run, confines paths to ``/app`` and turns
node errors into domain errors (``vm_manager.errors``) so the API answers 4xx/503 instead of
500. Drivers are async; these are sync for DRF views and bridge with ``async_to_sync`` (or, for
the streamed archive outside ASGI, a private event loop; see ``container_archive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.conf import settings

from vm_manager.drivers import (
    WORKSPACE_ROOT,
    ExecResult,
    GuestFileNotFound,
    NodeBadRequest,
    NodeDriver,
    NodeError,
    PathNotAllowed,
    VMNotFound,
    VMNotRunning,
    VMStats,
)
from vm_manager.drivers.base import ArchiveFormat
from vm_manager.drivers.paths import workspace_path
from vm_manager.errors import (
    ContainerNotRunning,
    GuestPathNotFound,
    GuestRequestRejected,
    NodeUnreachable,
    PathOutsideWorkspace,
    UploadTooLarge,
    VMManagerError,
)
from vm_manager.idle import container_touch, container_wake
from vm_manager.models import Container
from vm_manager.operations import driver_for

T = TypeVar("T")


def domain_error_for(exc: NodeError) -> VMManagerError:
    """The API's view of a node failure; messages never carry node addresses or tokens."""
    if isinstance(exc, PathNotAllowed):
        return PathOutsideWorkspace(str(exc) or None)
    if isinstance(exc, GuestFileNotFound):
        return GuestPathNotFound(str(exc) or None)
    if isinstance(exc, VMNotRunning | VMNotFound):
        return ContainerNotRunning()
    if isinstance(exc, NodeBadRequest):
        return GuestRequestRejected(str(exc)[:300] or None)
    return NodeUnreachable()


@contextlib.contextmanager
def node_errors_as_domain_errors() -> Iterator[None]:
    try:
        yield
    except NodeError as exc:
        raise domain_error_for(exc) from exc


MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def guest_path(path: str) -> str:
    """``path`` normalised inside ``/app`` (relative paths start there), or a 400.

    Linux's limits (4096 bytes a path, 255 a name) are checked here so an over-long path is a
    clear 400 rather than whatever error the guest filesystem answers with.
    """
    with node_errors_as_domain_errors():
        normal = workspace_path(path)
    encoded = normal.encode(errors="surrogatepass")
    if len(encoded) > MAX_PATH_BYTES or any(
        len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")
    ):
        raise PathOutsideWorkspace("That path is too long.", code="path_too_long")
    return normal


def ensure_running(container: Container) -> None:
    """VM actions need a container meant to run that the reconciler saw running."""
    if container.desired_state != Container.DesiredState.RUNNING or (
        container.status != Container.Status.RUNNING
    ):
        raise ContainerNotRunning()


def ensure_in_use(container: Container) -> None:
    """A VM action is a use: record it, resume an idle-suspended container first (waiting
    for it), then require it running like ``ensure_running``."""
    if container.idle_suspended:
        fresh = container_wake(container)
        container.status, container.desired_state = fresh.status, fresh.desired_state
    else:
        container_touch(container)
    ensure_running(container)


def _running_driver(container: Container) -> NodeDriver:
    ensure_in_use(container)
    return driver_for(container)


def _call(func: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    with node_errors_as_domain_errors():
        return async_to_sync(func)(*args, **kwargs)


def container_exec(container: Container, cmd: str) -> ExecResult:
    """Run ``cmd`` in ``/app``; time and output are bounded by the driver."""
    driver = _running_driver(container)
    return _call(driver.exec, container.vm_id, cmd, float(settings.EXEC_TIMEOUT_SECONDS))


def upload_target(dest_path: str, filename: str) -> str:
    """Where an uploaded file lands: ``dest_path`` (a folder) joined with the file's base name."""
    name = posixpath.basename(filename.replace("\\", "/"))
    if name in ("", ".", ".."):
        raise PathOutsideWorkspace("The uploaded file needs a name.")
    folder = guest_path(dest_path)
    return guest_path(posixpath.join(folder, name))


def container_upload_file(container: Container, path: str, content: bytes) -> str:
    if len(content) > settings.MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"Uploads are limited to {settings.MAX_UPLOAD_BYTES} bytes.")
    driver = _running_driver(container)
    _call(driver.write_file, container.vm_id, path, content)
    return path


def container_read_file(container: Container, path: str) -> bytes:
    target = guest_path(path)
    driver = _running_driver(container)
    return _call(driver.read_file, container.vm_id, target)


def container_statistics(container: Container) -> VMStats:
    driver = _running_driver(container)
    return _call(driver.vm_stats, container.vm_id)


def container_restart(container: Container) -> None:
    """Reboot the VM in place; desired and observed state stay ``running``."""
    driver = _running_driver(container)
    _call(driver.vm_stop, container.vm_id)
    _call(driver.vm_start, container.vm_id)


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
        # Headers are gone already: the client sees a truncated archive.
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


def container_archive(
    container: Container, root: str, fmt: ArchiveFormat, *, asynchronous: bool
) -> AsyncIterator[bytes] | LoopStream:
    """The archive of ``root`` as a stream; errors before the first byte are raised here.

    ``asynchronous`` (under ASGI) gives an async iterator that runs on the server's loop, so
    it streams; otherwise a ``LoopStream`` that a WSGI server or the test client can iterate.
    """
    target = guest_path(root)
    driver = _running_driver(container)
    if not asynchronous:
        with node_errors_as_domain_errors():
            return LoopStream(driver.archive(container.vm_id, target, fmt))

    chunks = driver.archive(container.vm_id, target, fmt)

    async def first() -> bytes:
        return await _first_chunk(chunks)

    return _rest(async_to_sync(first)(), chunks)


__all__ = [
    "WORKSPACE_ROOT",
    "LoopStream",
    "container_archive",
    "container_exec",
    "container_read_file",
    "container_restart",
    "container_statistics",
    "container_upload_file",
    "domain_error_for",
    "ensure_in_use",
    "ensure_running",
    "guest_path",
    "upload_target",
]
