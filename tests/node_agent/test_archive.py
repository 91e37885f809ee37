"""Workspace archives: streamed, capped in bytes, bounded in memory, safe zip names, sparse files.

The guest is untrusted, so most tests feed hand-made tar streams; the last ones run the real
guest scripts (GNU tar, du) through the stand-in SSH guest of conftest.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
import threading
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Iterator

import pytest

from node_agent import archive
from node_agent.archive import (
    ArchiveAborted,
    archive_stream,
    capped,
    zip_from_tar,
    zip_member_name,
)
from node_agent.errors import ArchiveTooLargeError

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("./src/main.py", "src/main.py"),
        ("a//b/./c", "a/b/c"),
        ("../evil", None),
        ("a/../../evil", None),
        ("src/../x", None),  # a '..' anywhere is refused, even one that would stay inside
        ("/etc/passwd", None),
        ("\\windows\\evil", None),
        ("..\\evil", None),
        ("C:evil", None),
        ("c:/evil", None),
        ("a\x00b", None),
        (".", None),
        ("./", None),
        ("dir\\file.txt", "dir/file.txt"),
    ],
)
def test_zip_names_that_escape_the_root_are_dropped(name, expected):
    assert zip_member_name(name) == expected


def make_tar(members: list[tuple[str, bytes | None]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar stream; ``None`` content makes a symlink to /etc/passwd."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o640
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


async def chunks_of(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_zip_holds_the_regular_files_under_safe_unique_names():
    long_name = "deep/" + "d" * 150 + "/file.txt"  # a GNU long-name header
    tar = make_tar(
        [
            ("./src/a.txt", b"A" * 100_000),
            ("./src/a.txt", b"second copy"),
            ("../escape.txt", b"x"),
            ("/abs.txt", b"x"),
            ("./link", None),
            (long_name, b"long"),
        ]
    )

    zipped = await collect(zip_from_tar(chunks_of(tar), limit=10 * MIB))

    with zipfile.ZipFile(io.BytesIO(zipped)) as result:
        assert result.namelist() == ["src/a.txt", long_name]
        assert result.read("src/a.txt") == b"A" * 100_000
        assert result.getinfo("src/a.txt").external_attr >> 16 & 0o777 == 0o640
        assert result.testzip() is None


async def test_a_stream_over_the_cap_is_cut_off_and_the_worker_stops():
    tar = make_tar([("big.bin", os.urandom(3 * MIB))])

    with pytest.raises(ArchiveAborted, match="more than"):
        await collect(zip_from_tar(chunks_of(tar, 64 * 1024), limit=MIB))
    with pytest.raises(ArchiveAborted, match="more than"):
        await collect(capped(chunks_of(tar, 64 * 1024), limit=MIB))
    await asyncio.sleep(1.0)  # the worker checks for cancellation twice a second
    assert not [t for t in threading.enumerate() if t.name == "archive-zip"]


async def test_a_reader_that_goes_away_stops_the_guest_stream():
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        info = tarfile.TarInfo("f.bin")
        info.size = 1 << 40
        yield info.tobuf(format=tarfile.GNU_FORMAT)
        try:
            while True:
                yield b"\0" * 65536
        finally:
            closed.set()

    stream = zip_from_tar(endless(), limit=1 << 50)
    first = await anext(stream)  # the zip's first local header is out
    await stream.aclose()

    assert first.startswith(b"PK")
    await asyncio.wait_for(closed.wait(), 5)


def crafted_long_name(declared: int) -> Iterator[bytes]:
    """A GNU long-name header announcing ``declared`` bytes of name, then the name itself."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, declared
    yield info.tobuf(format=tarfile.USTAR_FORMAT)
    while True:
        yield b"a" * 65536


async def test_a_crafted_huge_long_name_is_refused_without_being_read_into_memory():
    sent = 0

    async def guest() -> AsyncIterator[bytes]:
        nonlocal sent
        for chunk in crafted_long_name(512 * MIB):
            sent += len(chunk)
            yield chunk
            if sent > 600 * MIB:
                return

    tracemalloc.start()
    try:
        with pytest.raises(ArchiveAborted, match="extended header"):
            await collect(zip_from_tar(guest(), limit=1 << 40))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * MIB
    assert sent < 4 * MIB


async def test_gnu_sparse_members_and_oversized_pax_records_are_refused():
    sparse = tarfile.TarInfo("sparse")
    sparse.type = tarfile.GNUTYPE_SPARSE
    pax = tarfile.TarInfo("./PaxHeaders/x")
    pax.type, pax.size = tarfile.XHDTYPE, archive.MAX_EXTENDED_HEADER + 1

    for header in (sparse.tobuf(format=tarfile.GNU_FORMAT), pax.tobuf(tarfile.USTAR_FORMAT)):
        stream = header + b"\0" * (archive.MAX_EXTENDED_HEADER + 4096)
        with pytest.raises(ArchiveAborted):
            await collect(zip_from_tar(chunks_of(stream), limit=10 * MIB))


# -- with the real guest scripts (GNU tar, du) over SSH ---------------------------------------


async def test_a_sparse_file_is_tiny_in_the_tar_gz_and_refused_as_a_zip(fake_guest):
    with (fake_guest.workspace / "sparse.img").open("wb") as sparse:
        sparse.truncate(256 * MIB)  # all hole: no block allocated
    (fake_guest.workspace / "note.txt").write_text("hi")
    conn = await fake_guest.connection().get()
    try:
        tarred = await collect(await archive_stream(conn, "/app", "tar.gz", limit=8 * MIB))
        with pytest.raises(ArchiveTooLargeError, match="more than the 8 MiB"):
            await archive_stream(conn, "/app", "zip", limit=8 * MIB)
    finally:
        conn.close()

    assert len(tarred) < 64 * 1024
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarred))) as result:
        assert result.getmember("./sparse.img").size == 256 * MIB
        assert result.extractfile("./note.txt").read() == b"hi"  # type: ignore[union-attr]


async def test_a_zip_of_the_workspace_streams_through_the_real_tar(fake_guest):
    (fake_guest.workspace / "pkg").mkdir()
    (fake_guest.workspace / "pkg" / "data.txt").write_bytes(b"payload")
    conn = await fake_guest.connection().get()
    try:
        zipped = await collect(await archive_stream(conn, "/app", "zip", limit=8 * MIB))
    finally:
        conn.close()

    with zipfile.ZipFile(io.BytesIO(zipped)) as result:
        assert result.read("pkg/data.txt") == b"payload"
        assert "etc/passwd" not in result.namelist()  # the fixture's /app/etc -> /etc link
