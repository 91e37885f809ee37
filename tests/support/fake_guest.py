"""A stand-in guest over real SSH: a local SSH server running each command with the host's
bash, ``/app`` mapped to a temporary directory (the ``fake_guest`` fixture serves it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from node_agent import guest

INSTANCE_ID = "0123456789abcdef"


@dataclass
class FakeGuest:
    port: int
    workspace: Path
    key: asyncssh.SSHKey
    host_key: asyncssh.SSHKey

    def connection(
        self, instance_id: str = INSTANCE_ID, host_key: asyncssh.SSHKey | None = None
    ) -> guest.GuestConnection:
        pinned = host_key or self.host_key
        return guest.GuestConnection("vm1", instance_id, lambda: self.port, self.key, pinned)


class AcceptKeys(asyncssh.SSHServer):
    pass


def guest_handler(workspace: Path, id_file: Path) -> Callable[..., Awaitable[None]]:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = (process.command or "").replace(guest.INSTANCE_ID_PATH, str(id_file))
        local = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command.replace("/app", str(workspace)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # as sshd does: the command leads its process group
        )
        assert local.stdin and local.stdout and local.stderr

        async def feed() -> None:
            # A command may exit without reading all its input (a refused path): like sshd,
            # drop the rest instead of failing the session.
            try:
                while data := await process.stdin.read(65536):
                    local.stdin.write(data)
                    await local.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                local.stdin.close()

        async def pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
            while data := await source.read(65536):
                sink.write(data)

        await asyncio.gather(
            feed(), pump(local.stdout, process.stdout), pump(local.stderr, process.stderr)
        )
        process.exit(await local.wait())

    return handle
