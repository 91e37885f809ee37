"""``node_agent.guest`` against a local SSH server standing in for a guest (no VM boots).

The server speaks real SSH (asyncssh) and runs each command with the host's bash, with ``/app``
and the instance id file mapped into a temporary directory; the VM tests repeat all of this on
real guests.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from node_agent import guest
from node_agent.errors import (
    GuestFileNotFoundError,
    IdentityMismatchError,
    PathNotAllowedError,
    SSHNotReadyError,
)

INSTANCE_ID = "0123456789abcdef"


@dataclass
class FakeGuest:
    port: int
    workspace: Path
    key: asyncssh.SSHKey

    def connection(self, instance_id: str = INSTANCE_ID) -> guest.GuestConnection:
        return guest.GuestConnection("vm1", instance_id, lambda: self.port, self.key)


class _AcceptKeys(asyncssh.SSHServer):
    pass


def _handler(workspace: Path, id_file: Path) -> Callable[..., Awaitable[None]]:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = (process.command or "").replace(guest.INSTANCE_ID_PATH, str(id_file))
        local = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command.replace("/app", str(workspace)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert local.stdin and local.stdout and local.stderr

        async def feed() -> None:
            while data := await process.stdin.read(65536):
                local.stdin.write(data)
                await local.stdin.drain()
            local.stdin.close()

        async def pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
            while data := await source.read(65536):
                sink.write(data)

        await asyncio.gather(
            feed(), pump(local.stdout, process.stdout), pump(local.stderr, process.stderr)
        )
        process.exit(await local.wait())

    return handle


@pytest.fixture
async def fake_guest() -> AsyncIterator[FakeGuest]:
    root = Path(tempfile.mkdtemp(prefix="pqk-guest-"))  # never under a path containing /app
    workspace, id_file = root / "ws", root / "instance_id"
    workspace.mkdir()
    (workspace / "etc").symlink_to("/etc")
    id_file.write_text(INSTANCE_ID + "\n")
    key, authorized = guest.load_or_create_key(root / "ssh")
    server = await asyncssh.create_server(
        _AcceptKeys,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        authorized_client_keys=str(authorized),
        process_factory=_handler(workspace, id_file),
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield FakeGuest(port=port, workspace=workspace, key=key)
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(root, ignore_errors=True)


async def test_banner_probe_sees_ssh(fake_guest):
    assert await guest.wait_for_banner(fake_guest.port)


async def test_connection_is_verified_and_reused(fake_guest):
    connection = fake_guest.connection()

    first = await connection.get()
    second = await connection.get()

    assert first is second and connection.ready()
    await connection.close()
    assert not connection.ready()


async def test_a_guest_with_another_instance_id_is_refused(fake_guest):
    connection = fake_guest.connection(instance_id="somebody-else")

    with pytest.raises(IdentityMismatchError):
        await connection.get()
    assert not connection.ready()


async def test_no_ssh_on_the_port_is_not_ready(fake_guest):
    connection = guest.GuestConnection("vm1", INSTANCE_ID, lambda: None, fake_guest.key)

    with pytest.raises(SSHNotReadyError):
        await connection.get()


async def test_exec_reports_output_exit_code_and_timeouts(fake_guest):
    conn = await fake_guest.connection().get()

    done = await guest.exec_command(conn, "echo out; echo err >&2; exit 3", timeout=10)
    slow = await guest.exec_command(conn, "sleep 10", timeout=1)
    big = await guest.exec_command(conn, "head -c 1000000 /dev/zero", timeout=10)

    assert (done["stdout"], done["stderr"], done["exit_code"]) == ("out\n", "err\n", 3)
    assert slow["timed_out"] is True
    assert len(big["stdout"]) == guest.MAX_OUTPUT_BYTES
    conn.close()


async def test_files_round_trip_and_symlink_escape_is_refused(fake_guest):
    conn = await fake_guest.connection().get()

    await guest.write_file(conn, "/app/src/a.txt", b"\x00data", 0o600)
    entries = await guest.list_dir(conn, "/app")
    content = await guest.read_file(conn, "/app/src/a.txt")
    await guest.move_path(conn, "/app/src/a.txt", "/app/b.txt")
    with pytest.raises(PathNotAllowedError):
        await guest.read_file(conn, "/app/etc/passwd")
    with pytest.raises(PathNotAllowedError):
        await guest.write_file(conn, "/app/etc/pequeroku-test", b"x", None)
    with pytest.raises(GuestFileNotFoundError):
        await guest.read_file(conn, "/app/src/a.txt")

    assert content == b"\x00data"
    assert [(e["name"], e["path_type"]) for e in entries] == [
        ("etc", "symlink"),
        ("src", "directory"),
    ]
    assert (fake_guest.workspace / "b.txt").read_bytes() == b"\x00data"
    assert not Path("/etc/pequeroku-test").exists()
    tar = b"".join([chunk async for chunk in guest.tar_stream(conn, "/app", gzip=True)])
    assert tar[:2] == b"\x1f\x8b"
    conn.close()
