"""The agent's persistent channel to a guest, over a virtio-serial port: no network, no keys,
no handshake.

Entry point: ``GuestChannel`` (``ready``, ``ping``, ``exec``, ``adopt``, ``set_time``,
``close``).

QEMU serves the port's host end on a unix socket the agent bound in the VM's private directory
(``qemu.VMFiles.channel_socket``), so whatever answers on it is this VM's guest: its daemon,
``scripts/guest/pequeroku-channel.c`` (the protocol is documented there: frames of a header
line ``<id> <kind> <length>`` and that many bytes). The daemon is started by the guest's init
and survives a suspend or a restore from a golden snapshot, so a restored guest answers the
moment QEMU runs again; a request written before the daemon opens the port (a cold boot) waits
in the socket and is answered when it does.

The guest is its user's (root in it): what it sends is bounded (``MAX_FRAME``, each output at
most the caller's limit), parsed defensively and only ever trusted as that guest's own results.
A guest that stops answering makes the channel unready; the agent then uses SSH
(``node_agent.guest``) for the same calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from .errors import AgentError, IdentityMismatchError, SSHNotReadyError
from .identity import public_line
from .qemu import unix_path

log = logging.getLogger("node_agent.channel")

MAX_FRAME = 1024 * 1024  # the daemon sends output in chunks of 64 KiB
MAX_HEADER = 128
KILL_GRACE = 2.0  # the daemon's, between SIGTERM and SIGKILL of a command's group
SLACK = 5.0  # beyond a command's own limits before an answer is given up on
ADOPT_WAIT = PING_WAIT = 10.0
_HEADER = re.compile(rb"([0-9]{1,20}) ([a-z]{1,15}) ([0-9]{1,9})\n")
FINAL_KINDS = {"ok", "exit", "mismatch", "error"}


@dataclass
class _Call:
    """One request's answer as it arrives: output chunks, then a final frame."""

    limit: int
    done: asyncio.Future[tuple[str, bytes]]
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)

    def take(self, kind: str, data: bytes) -> None:
        if kind in ("out", "err"):
            kept = self.out if kind == "out" else self.err
            kept += data[: max(0, self.limit - len(kept))]
        elif kind in FINAL_KINDS and not self.done.done():
            self.done.set_result((kind, data))


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    calls: dict[int, _Call] = field(default_factory=dict)
    listener: asyncio.Task[None] | None = None
    answering: bool = False  # the daemon has answered on this connection

    def open(self) -> bool:
        return not self.writer.is_closing()


class GuestChannel:
    """One connection to a VM's channel socket; requests are multiplexed by id."""

    def __init__(self, vm_id: str, path: Path) -> None:
        self.vm_id, self.path = vm_id, path
        self._conn: _Connection | None = None
        self._next_id = secrets.randbelow(2**31)  # answers meant for an earlier connection miss
        self._lock = asyncio.Lock()

    def ready(self) -> bool:
        return self._conn is not None and self._conn.answering and self._conn.open()

    async def _connection(self) -> _Connection:
        async with self._lock:
            if self._conn is not None and self._conn.open():
                return self._conn
            try:
                with unix_path(self.path) as address:
                    reader, writer = await asyncio.open_unix_connection(address)
            except OSError as exc:
                raise SSHNotReadyError(f"VM {self.vm_id}: no channel ({exc.strerror})") from None
            # A newline first: ends any half request an earlier connection left in the guest.
            writer.write(b"\n")
            conn = self._conn = _Connection(reader, writer)
            conn.listener = asyncio.create_task(self._listen(conn))
            return conn

    async def _listen(self, conn: _Connection) -> None:
        try:
            while True:
                header = await conn.reader.readuntil(b"\n")
                match = _HEADER.fullmatch(header) if len(header) <= MAX_HEADER else None
                if match is None:
                    continue  # not a header (what a previous connection left half read)
                length = int(match.group(3))
                if length > MAX_FRAME:
                    raise ValueError(f"a frame of {length} bytes")
                data = await conn.reader.readexactly(length)
                call = conn.calls.get(int(match.group(1)))
                if call is not None:
                    call.take(match.group(2).decode(), data)
        except asyncio.IncompleteReadError:
            pass
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            log.warning("VM %s: channel closed (%s)", self.vm_id, exc)
        finally:
            conn.answering = False
            conn.writer.close()
            for call in conn.calls.values():
                if not call.done.done():
                    call.done.set_exception(SSHNotReadyError(f"VM {self.vm_id}: channel closed"))
            conn.calls.clear()

    async def request(
        self, op: str, wait: float, payload: bytes = b"", limit: int = 0
    ) -> tuple[str, bytes, _Call]:
        """Send one request and wait up to ``wait`` seconds for its final frame.

        No answer in time leaves the channel unready (the caller may use SSH next time); the
        request itself may still have run in the guest.
        """
        conn = await self._connection()
        self._next_id = (self._next_id + 1) % 10**18
        rid = self._next_id
        call = _Call(limit, asyncio.get_running_loop().create_future())
        conn.calls[rid] = call
        try:
            conn.writer.write(f"{rid} {op} {len(payload)}\n".encode() + payload)
            await conn.writer.drain()
            kind, data = await asyncio.wait_for(call.done, wait)
        except TimeoutError:
            conn.answering = False
            raise SSHNotReadyError(f"VM {self.vm_id}: the guest's channel did not answer") from None
        except OSError:
            raise SSHNotReadyError(f"VM {self.vm_id}: channel closed") from None
        finally:
            conn.calls.pop(rid, None)
        conn.answering = True
        if kind == "error":
            raise AgentError(f"VM {self.vm_id}: {data[:300].decode(errors='replace')}")
        return kind, data, call

    async def ping(self, wait: float) -> str:
        """The instance id the guest holds (waits for a cold-booting guest's daemon)."""
        _, data, _ = await self.request("ping", wait)
        return data.decode(errors="replace").strip()

    async def exec(self, cmd: str, timeout: float, limit: int) -> dict[str, object]:
        """``guest.exec_command``'s result, run by the guest's daemon as a login shell would
        in /app; after ``timeout`` seconds its process group is ended (exit code 124)."""
        payload = f"{round(timeout * 1000)} {limit}\n".encode() + cmd.encode()
        _, data, call = await self.request(
            "exec", timeout + 2 * KILL_GRACE + SLACK, payload, limit=limit
        )
        code, _, timed_out = data.decode(errors="replace").partition(" ")
        return {
            "exit_code": int(code) if code.lstrip("-").isdigit() else -1,
            "stdout": bytes(call.out).decode(errors="replace"),
            "stderr": bytes(call.err).decode(errors="replace"),
            "timed_out": timed_out.strip() == "1",
        }

    async def adopt(
        self,
        template_id: str,
        instance_id: str,
        host_key: asyncssh.SSHKey,
        node_key: asyncssh.SSHKey,
        grow: bool,
    ) -> None:
        """Give a guest restored from a golden snapshot this VM's identity: instance id, SSH
        host key and authorized key, machine id, boot id, hostname, a reseeded RNG, the wall
        clock, the filesystem grown when the disk is larger. The guest must still hold the
        template's id; one that holds this VM's already (an adoption whose answer was lost)
        is left as it is."""
        fields = [
            template_id,
            instance_id,
            public_line(host_key),
            public_line(node_key),
            secrets.token_hex(16),  # machine id
            str(uuid.uuid4()),  # boot id
            f"{time.time():.3f}",
            secrets.token_hex(64),  # mixed into the guest's RNG
            "1" if grow else "0",
        ]
        payload = "\n".join(fields).encode() + b"\n" + host_key.export_private_key()
        kind, data, _ = await self.request("adopt", ADOPT_WAIT, payload)
        if data.decode(errors="replace").strip() != instance_id:
            raise IdentityMismatchError(f"the guest answering for VM {self.vm_id} is another VM")
        if kind == "mismatch":
            log.info("VM %s: the guest had taken its identity already", self.vm_id)

    async def set_time(self) -> str:
        """Set the guest's wall clock (it stood still while suspended); the id it holds."""
        _, data, _ = await self.request("time", PING_WAIT, f"{time.time():.3f}".encode())
        return data.decode(errors="replace").strip()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.writer.close()
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()
        if conn.listener is not None:
            conn.listener.cancel()
            with contextlib.suppress(BaseException):
                await conn.listener
