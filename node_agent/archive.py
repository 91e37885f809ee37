"""Workspace archives streamed from the guest, bounded in bytes and memory.

Entry points: ``archive_stream`` (what the archive route serves), ``capped``, ``zip_from_tar``,
``zip_member_name``.

The guest is untrusted (its user is root and can replace ``tar``), so:
- nothing is spooled: a tar.gz passes through, a zip is built entry by entry while the guest's
  tar streams in, both in fixed-size buffers;
- bytes are capped (``--max-archive-mb``): a tree measured over the cap is refused before any
  byte is sent (400 ``archive_too_large``); a stream that passes it anyway is cut off, and the
  client sees an incomplete body, never a silently truncated archive;
- sparse files do not inflate: the tar.gz is made with ``tar --sparse``, and a zip (which cannot
  hold holes) is measured by apparent size;
- zip entry names are normalised and those that would land outside the extraction directory
  (``..``, absolute paths, drive letters) are dropped, as are duplicates;
- the tar reader refuses extended headers (long names, pax records) over 64 KiB and GNU sparse
  members, whose maps Python's ``tarfile`` would otherwise read into memory in full.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import re
import tarfile
import threading
import time
import zipfile
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncssh

from . import guest
from .errors import ArchiveTooLargeError

log = logging.getLogger("node_agent.archive")

CHUNK = 64 * 1024
QUEUE_CHUNKS = 16  # at most this many chunks wait on each side of the zip thread
MAX_EXTENDED_HEADER = 64 * 1024
MAX_ZIP_ENTRIES = 200_000  # the zip's central directory is held in memory until the end
_EXTENDED_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveAborted(Exception):
    """The stream passed a limit or broke after its first byte was sent."""


def zip_member_name(name: str) -> str | None:
    """``name`` as a relative zip path, or None when it would escape the extraction root."""
    if "\x00" in name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        return None
    parts = []
    for part in re.split(r"[/\\]", name):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        parts.append(part)
    return "/".join(parts) or None


class _BoundedTarInfo(tarfile.TarInfo):
    """``tarfile`` reads long names, pax records and sparse maps into memory whole: bound them.

    The hooks are ``TarInfo``'s documented-by-source extension points (``_proc_member`` is what
    subclasses override for custom types); the guest's own tar never produces what is refused.
    """

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_TYPES and self.size > MAX_EXTENDED_HEADER:
            raise tarfile.HeaderError(f"extended header of {self.size} bytes")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.HeaderError("GNU sparse member")
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]

    def _proc_gnusparse_10(self, *args: Any) -> None:
        raise tarfile.HeaderError("GNU sparse 1.0 member")


class _Inbox:
    """The tar bytes, read by the zip thread as a file (``read``), counted against the cap."""

    def __init__(self, limit: int, stop: threading.Event, space: Any) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._buffer = b""
        self._eof = False
        self._limit, self._stop, self._space = limit, stop, space
        self.total = 0

    def put(self, chunk: bytes | None) -> None:
        self._queue.put(chunk)

    def _next(self) -> bytes | None:
        while not self._stop.is_set():
            try:
                chunk = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._space()
            return chunk
        raise ArchiveAborted("cancelled")

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = self._next()
            if chunk is None:
                self._eof = True
                break
            self.total += len(chunk)
            if self.total > self._limit:
                raise ArchiveAborted(f"the guest sent more than {self._limit} bytes")
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _Outbox:
    """Zip bytes written by the zip thread, handed to the event loop in ``CHUNK`` pieces."""

    def __init__(self, emit: Any) -> None:
        self._emit = emit
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()


def _tar_to_zip(source: _Inbox, sink: _Outbox) -> int:
    """Copy the regular files of the tar stream into a zip stream; return how many."""
    seen: set[str] = set()
    written = 0
    with (
        tarfile.open(fileobj=source, mode="r|", tarinfo=_BoundedTarInfo) as tar,
        zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        while (member := tar.next()) is not None:
            # Even in stream mode tarfile keeps every member it read: keep memory flat.
            tar.members.clear()
            if not member.isreg():
                continue
            if len(seen) >= MAX_ZIP_ENTRIES:
                raise ArchiveAborted(f"more than {MAX_ZIP_ENTRIES} files")
            name = zip_member_name(member.name)
            if name is None or name in seen:
                log.info("archive: dropped entry %r (unsafe or duplicate name)", member.name[:200])
                continue
            seen.add(name)
            info = zipfile.ZipInfo(name, date_time=_zip_time(member.mtime))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (member.mode & 0o7777 | 0o100000) << 16
            info.file_size = member.size
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            with extracted, target.open(info, "w") as out:  # file_size picks zip64
                while block := extracted.read(CHUNK):
                    out.write(block)
            written += 1
    sink.flush()
    return written


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    stamp = time.gmtime(max(mtime, 315532800))  # zip cannot say anything before 1980
    return (stamp.tm_year, stamp.tm_mon, stamp.tm_mday, stamp.tm_hour, stamp.tm_min, stamp.tm_sec)


async def capped(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through until more than ``limit`` bytes went by, then stop with an error."""
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > limit:
                raise ArchiveAborted(f"the guest sent more than {limit} bytes")
            yield chunk
    finally:
        await _aclose(chunks)


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        await closer()


async def zip_from_tar(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """A zip of the tar stream ``chunks``, built in a thread while both ends stream."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    space = asyncio.Semaphore(QUEUE_CHUNKS)
    outbox: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUE_CHUNKS)
    inbox = _Inbox(limit, stop, lambda: loop.call_soon_threadsafe(space.release))

    def emit(item: bytes | BaseException | None) -> None:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def settle(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                future.set_exception(concurrent.futures.CancelledError())
            elif task.exception() is not None:
                future.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                future.set_result(None)

        def start() -> None:
            # The coroutine is made on the loop, never in this thread: a loop that is gone
            # before it runs leaves no un-awaited coroutine behind.
            if future.set_running_or_notify_cancel():
                loop.create_task(outbox.put(item)).add_done_callback(settle)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed: the reader went away
            raise ArchiveAborted("cancelled") from None
        while True:
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    future.cancel()
                    raise ArchiveAborted("cancelled") from None

    def work() -> None:
        try:
            _tar_to_zip(inbox, _Outbox(emit))
            emit(None)
        except BaseException as exc:
            if not stop.is_set():
                with contextlib.suppress(ArchiveAborted):
                    emit(exc)

    async def feed() -> None:
        try:
            async for chunk in chunks:
                await space.acquire()
                inbox.put(chunk)
        finally:
            inbox.put(None)
            await _aclose(chunks)

    thread = threading.Thread(target=work, name="archive-zip", daemon=True)
    thread.start()
    feeder = asyncio.create_task(feed())
    try:
        while True:
            item = await outbox.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                if isinstance(item, ArchiveAborted | tarfile.TarError | OSError | EOFError):
                    raise ArchiveAborted(str(item)) from item
                raise item
            yield item
    finally:
        stop.set()
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder


async def archive_stream(
    conn: asyncssh.SSHClientConnection,
    root: str,
    fmt: Literal["zip", "tar.gz"],
    limit: int,
) -> AsyncIterator[bytes]:
    """Check the tree against ``limit`` (raising before any byte), then the streamed archive."""
    apparent, allocated = await guest.tree_size(conn, root)
    measured = apparent if fmt == "zip" else allocated
    if measured > limit:
        raise ArchiveTooLargeError(
            f"{root} holds {_mib(measured)} MiB, more than the {_mib(limit)} MiB an archive "
            "may hold; download a smaller folder"
        )
    if fmt == "tar.gz":
        return _logged(capped(guest.tar_stream(conn, root, gzip=True), limit), root)
    return _logged(zip_from_tar(guest.tar_stream(conn, root, gzip=False), limit), root)


async def _logged(chunks: AsyncIterator[bytes], root: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except ArchiveAborted as exc:
        log.warning("archive of %s cut off: %s", root, exc)
        raise


def _mib(size: int) -> int:
    return -(-size // (1024 * 1024))
