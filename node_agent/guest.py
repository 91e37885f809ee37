"""Talking to a guest over SSH: one verified connection per VM, commands and file operations.

Entry points: ``wait_for_banner``, ``GuestConnection`` (``get``, ``ready``, ``close``),
``run``, ``exec_command``, and the file operations ``list_dir``, ``read_file``, ``write_file``,
``make_dir``, ``move_path``, ``delete_path``, ``check_dir``, ``tree_size``, ``tar_stream``.

Every file operation runs as one small shell script in the guest that first resolves the path
with ``realpath -m`` (following symlinks the way the guest's own filesystem does) and refuses it
when it leaves ``/app``; only then does it touch anything.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import secrets
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncssh

from .errors import (
    AgentError,
    BadRequestError,
    FileTooLargeError,
    GuestFileNotFoundError,
    IdentityMismatchError,
    PathNotAllowedError,
    SSHNotReadyError,
)
from .identity import public_line

log = logging.getLogger("node_agent.guest")

MAX_OUTPUT_BYTES = 256 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
INSTANCE_ID_PATH = "/run/pequeroku/instance_id"
CONNECT_TIMEOUT = 20.0
# Builtins only (no ``cat``): a process costs tens of milliseconds in a TCG guest.
_READ_ID = f"IFS= read -r id <{INSTANCE_ID_PATH}; printf '%s\\n' \"$id\""


async def wait_for_banner(port: int, attempt_timeout: float = 1.5) -> bool:
    """One attempt: does something on ``port`` speak SSH?"""
    try:
        async with asyncio.timeout(attempt_timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return (await reader.readline()).startswith(b"SSH-")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (TimeoutError, OSError):
        return False


class GuestConnection:
    """The one SSH connection to a VM, opened lazily and checked against its identity.

    The guest must present the VM's own host key (pinned) and hold its instance id. The port
    comes from a callable so a reconnect always uses the VM's current forward.
    """

    def __init__(
        self,
        vm_id: str,
        instance_id: str,
        port: Callable[[], int | None],
        key: asyncssh.SSHKey,
        host_key: asyncssh.SSHKey,
    ) -> None:
        self.vm_id, self.instance_id = vm_id, instance_id
        self._port, self._key, self._host_key = port, key, host_key
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self.clock_sync_pending = False  # set after a restore: the guest's clock stood still
        self.adoption: Adoption | None = None  # set while the guest holds a template identity
        self._spares: collections.deque[Spare] = collections.deque()
        self._refill: asyncio.Task[None] | None = None

    def ready(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def get(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self.ready():
                assert self._conn is not None  # noqa: S101
                return self._conn
            self._conn = await self._connect_verified()
            return self._conn

    async def _connect_verified(self) -> asyncssh.SSHClientConnection:
        port = self._port()
        if port is None:
            raise SSHNotReadyError(f"VM {self.vm_id} has no SSH forward")
        adoption = self.adoption
        host_key = adoption.host_key if adoption else self._host_key
        expected = adoption.instance_id if adoption else self.instance_id
        started = time.monotonic()
        try:
            conn = await asyncssh.connect(
                "127.0.0.1",
                port,
                username="root",
                client_keys=[self._key],
                known_hosts=([host_key], [], []),
                agent_path=None,
                connect_timeout=CONNECT_TIMEOUT,
                keepalive_interval=15,
                keepalive_count_max=4,
            )
        except asyncssh.HostKeyNotVerifiable:
            log.warning(
                "VM %s: guest on port %s is not this VM (identity mismatch: host key)",
                self.vm_id,
                port,
            )
            raise IdentityMismatchError(
                f"the guest answering for VM {self.vm_id} is another VM"
            ) from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise SSHNotReadyError(f"SSH to VM {self.vm_id} failed: {type(exc).__name__}") from None
        connected = time.monotonic()
        log.info("VM %s: SSH session open in %.2fs", self.vm_id, connected - started)
        if adoption is not None:
            try:
                await self._adopt(conn, adoption)
            except BaseException:
                conn.close()
                raise
            self.clock_sync_pending = False
            log.info("VM %s: adopted in %.2fs", self.vm_id, time.monotonic() - connected)
            return conn
        try:
            seen = await self._read_instance_id(conn, self._pending_clock_command())
        except BaseException:
            conn.close()
            raise
        if seen != expected:
            conn.close()
            log.warning(
                "VM %s: guest on port %s is not this VM (identity mismatch)", self.vm_id, port
            )
            raise IdentityMismatchError(f"the guest answering for VM {self.vm_id} is another VM")
        self.clock_sync_pending = False
        log.info("VM %s: identity checked in %.2fs", self.vm_id, time.monotonic() - connected)
        return conn

    async def _adopt(self, conn: asyncssh.SSHClientConnection, adoption: Adoption) -> None:
        """Give a guest restored from a golden snapshot this VM's identity (``ADOPT_SCRIPT``).

        The connection stays: it reached the template guest (its pinned host key, and the
        script checks its instance id first) on this VM's own forward, which only this VM's
        QEMU serves, and from now on that guest is this VM. One round trip in all.
        """
        machine_id, boot_id = secrets.token_hex(16), str(uuid.uuid4())
        command = " ".join(
            ["bash", "-c", shlex.quote(ADOPT_SCRIPT), "_", adoption.instance_id,
             shlex.quote(public_line(self._host_key)), machine_id, boot_id,
             f"{time.time():.3f}", secrets.token_hex(64), "grow" if adoption.grow else "-"]
        )  # fmt: skip
        result = await run(conn, command, timeout=CONNECT_TIMEOUT)
        if result.exit_code == 97:
            raise IdentityMismatchError(f"the guest answering for VM {self.vm_id} is another VM")
        if result.exit_code != 0:
            detail = result.stderr.decode(errors="replace").strip()[-200:]
            raise SSHNotReadyError(f"VM {self.vm_id}: taking its identity failed: {detail}")
        if result.stdout.decode(errors="replace").strip() != self.instance_id:
            raise IdentityMismatchError(f"VM {self.vm_id} did not take its instance id")
        self.adoption = None
        adoption.done()
        log.info("VM %s: identity given after restore from a golden snapshot", self.vm_id)

    def _pending_clock_command(self) -> str:
        """After a restore the guest's wall clock reads the time of the suspend: the first
        command on the new connection sets it (one round trip with the identity check)."""
        if not self.clock_sync_pending:
            return ""
        return f"; date -u -s @{time.time():.3f} >/dev/null 2>&1 || true"

    @staticmethod
    async def _read_instance_id(conn: asyncssh.SSHClientConnection, then: str = "") -> str:
        try:
            result = await asyncio.wait_for(
                conn.run(_READ_ID + then, check=False, stdin=asyncssh.DEVNULL),
                CONNECT_TIMEOUT,
            )
        except (OSError, asyncssh.Error, TimeoutError):
            raise SSHNotReadyError("could not read the guest's instance id") from None
        return str(result.stdout or "").strip() if result.exit_status == 0 else ""

    async def exec(self, cmd: str, timeout: float) -> dict[str, object]:
        """``exec_command`` on this guest, in a spare shell when one is waiting; spares are
        topped up once the call is done (starting one competes with the command for the
        guest's CPU)."""
        conn = await self.get()
        small = len(exec_text(cmd).encode()) <= MAX_SPARE_COMMAND
        spare = self._take_spare(conn) if small else None
        try:
            return await exec_command(conn, cmd, timeout, spare=spare)
        finally:
            self._top_up(conn)

    def _take_spare(
        self, conn: asyncssh.SSHClientConnection
    ) -> asyncssh.SSHClientProcess[bytes] | None:
        while self._spares:
            spare = self._spares.popleft()
            if spare.usable_on(conn):
                return spare.process
            spare.process.close()
        return None

    def _top_up(self, conn: asyncssh.SSHClientConnection) -> None:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill(conn))

    async def _fill(self, conn: asyncssh.SSHClientConnection) -> None:
        # Not at once: a call that comes right after (a suspend's sync, the next command)
        # would share the guest's CPU with the new shells.
        await asyncio.sleep(SPARE_DELAY)
        while len(self._spares) < SPARE_SHELLS and self._conn is conn and not conn.is_closed():
            try:
                process = await conn.create_process(SPARE_SCRIPT, encoding=None)
            except (OSError, asyncssh.Error):
                return
            self._spares.append(Spare(conn, process))

    def _drop_spares(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            self._refill = None
        while self._spares:
            self._spares.popleft().process.close()

    async def close(self) -> None:
        self._drop_spares()
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                with contextlib.suppress(Exception):
                    await self._conn.wait_closed()
                self._conn = None


@dataclass
class Spare:
    """A shell started ahead of time on one connection, waiting for its command."""

    owner: asyncssh.SSHClientConnection
    process: asyncssh.SSHClientProcess[bytes]

    def usable_on(self, conn: asyncssh.SSHClientConnection) -> bool:
        process = self.process
        return self.owner is conn and not process.is_closing() and process.exit_status is None


@dataclass
class Adoption:
    """The template identity a guest restored from a golden snapshot still holds."""

    host_key: asyncssh.SSHKey
    instance_id: str
    done: Callable[[], None]
    grow: bool = False


# Run once in a guest restored from a golden snapshot: $1 the template's instance id (checked
# first), $2 this VM's host public key, $3 machine id, $4 boot id, $5 wall clock, $6 random hex
# for the RNG, $7 "grow" when the disk is larger than the template's. The rest comes from this
# QEMU's fw_cfg (not migrated: the new QEMU's command line
# carries this VM's instance id and keys). Prints the new instance id. Builtins wherever bash
# has one: each process costs ~0.1 s under TCG.
ADOPT_SCRIPT = r"""set -e
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/pequeroku
copy() { local line; while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done; }
IFS= read -r seen </run/pequeroku/instance_id || true
[ "$seen" = "$1" ] || exit 97
printf '%s' "$6" >/dev/urandom
date -u -s "@$5" >/dev/null
umask 077
copy <"$fw/ssh_host_ed25519_key/raw" >/etc/ssh/ssh_host_ed25519_key
printf '%s\n' "$2" >/etc/ssh/ssh_host_ed25519_key.pub
copy <"$fw/authorized_keys/raw" >/root/.ssh/authorized_keys
umask 022
printf '%s\n' "$3" >/etc/machine-id
printf '%s\n' "$4" >/run/pequeroku/boot_id
mount --bind /run/pequeroku/boot_id /proc/sys/kernel/random/boot_id
printf 'pequeroku' >/proc/sys/kernel/hostname
IFS= read -r id <"$fw/instance_id/raw" || true
printf '%s' "$id" >/run/pequeroku/instance_id
if [ "$7" = grow ]; then nice -n 19 resize2fs /dev/vda </dev/null >/dev/null 2>&1 & fi
printf '%s\n' "$id"
"""


# Run once in a golden template before it is saved: wait for the boot to finish (what still
# starts would start again in every clone) and run what a clone runs first, so its binaries and
# libraries are in the saved page cache.
SETTLE_SCRIPT = r"""if command -v systemctl >/dev/null; then
  timeout 120 systemctl is-system-running --wait >/dev/null 2>&1
fi
date >/dev/null; mount --version >/dev/null; nice -n 19 true
resize2fs /dev/vda </dev/null >/dev/null 2>&1
true
"""


@dataclass
class RunResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool = False


async def _drain(stream: asyncssh.SSHReader[bytes], limit: int) -> tuple[bytes, bool]:
    buffer, seen = bytearray(), 0
    while chunk := await stream.read(65536):
        seen += len(chunk)
        if len(buffer) < limit:
            buffer += chunk[: limit - len(buffer)]
    return bytes(buffer), seen > limit


async def run(
    conn: asyncssh.SSHClientConnection,
    command: str,
    *,
    stdin: bytes = b"",
    timeout: float = 30.0,
    limit: int = MAX_OUTPUT_BYTES,
) -> RunResult:
    """Run ``command`` in the guest, keeping at most ``limit`` bytes of each output stream."""
    try:
        proc = await conn.create_process(command, encoding=None)
    except (OSError, asyncssh.Error) as exc:
        raise SSHNotReadyError(f"SSH session failed: {type(exc).__name__}") from None
    proc.stdin.write(stdin)
    proc.stdin.write_eof()
    try:
        async with asyncio.timeout(timeout):
            (stdout, truncated), (stderr, _) = await asyncio.gather(
                _drain(proc.stdout, limit), _drain(proc.stderr, limit)
            )
            await proc.wait_closed()
    except TimeoutError:
        proc.close()
        return RunResult(exit_code=124, stdout=b"", stderr=b"timed out", timed_out=True)
    except (OSError, asyncssh.Error) as exc:
        raise SSHNotReadyError(f"SSH session failed: {type(exc).__name__}") from None
    code = proc.exit_status if proc.exit_status is not None else -1
    return RunResult(
        exit_code=code, stdout=stdout, stderr=stderr, timed_out=False, truncated=truncated
    )


# An exec runs in the one process sshd starts for it (the user's shell, bash, in a session of
# its own): it reads the login profiles the way ``bash -l`` would, in /app, then evaluates the
# command. A nested ``timeout bash -lc`` cost two more processes (~0.1 s each under TCG); the
# agent enforces the time limit instead, signalling the session's process group, whose id the
# script prints as the first line of stderr (taken off before the output is returned).
_PID_FIRST = r"""printf '%s\n' "$$" >&2
"""
EXEC_PROFILE = r"""cd /app || exit 1
[ -r /etc/profile ] && . /etc/profile
if [ -r ~/.bash_profile ]; then . ~/.bash_profile
elif [ -r ~/.bash_login ]; then . ~/.bash_login
elif [ -r ~/.profile ]; then . ~/.profile; fi
"""
# A spare shell is that same process started ahead of time (sshd's fork and bash's start are
# most of an exec's cost under TCG): it waits for its command on stdin, up to a NUL, and only
# then reads the profiles and runs it, so it behaves as if started when the command came.
SPARE_SCRIPT = (
    _PID_FIRST
    + "IFS= read -r -d '' __pequeroku_cmd || exit 1\n"
    + EXEC_PROFILE
    + 'eval "unset __pequeroku_cmd; $__pequeroku_cmd"\n'
)
SPARE_SHELLS = 2
SPARE_DELAY = 0.2  # seconds after a call before spares are started again
MAX_SPARE_COMMAND = 16 * 1024  # bash reads a pipe byte by byte: longer commands go inline
KILL_GRACE = 2.0
_PID_LINE = re.compile(rb"([0-9]{1,9})\n")


def exec_script(cmd: str) -> str:
    return f"{_PID_FIRST}{EXEC_PROFILE}eval {shlex.quote(cmd)}"


def exec_text(cmd: str) -> str:
    """The command as bash will see it: an argument or a variable ends at the first NUL."""
    return cmd.split("\0", 1)[0]


async def _signal_group(conn: asyncssh.SSHClientConnection, pid: int | None, signal: str) -> None:
    if pid is None or pid <= 1:  # never "kill -- -1" (every process) or a group we don't know
        return
    with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
        await asyncio.wait_for(
            conn.run(f"kill -{signal} -- -{pid}", check=False, stdin=asyncssh.DEVNULL), 10.0
        )


async def exec_command(
    conn: asyncssh.SSHClientConnection,
    cmd: str,
    timeout: float,
    limit: int = MAX_OUTPUT_BYTES,
    spare: asyncssh.SSHClientProcess[bytes] | None = None,
) -> dict[str, object]:
    """Run ``cmd`` as a login shell would, in /app (in ``spare`` when given, a process running
    ``SPARE_SCRIPT``); after ``timeout`` seconds its process group gets SIGTERM, then SIGKILL
    ``KILL_GRACE`` seconds later (exit code 124, the output so far)."""
    cmd = exec_text(cmd)
    try:
        if spare is not None:
            proc = spare
            proc.stdin.write(cmd.encode() + b"\0")
        else:
            proc = await conn.create_process(exec_script(cmd), encoding=None)
        proc.stdin.write_eof()
    except (OSError, asyncssh.Error) as exc:
        raise SSHNotReadyError(f"SSH session failed: {type(exc).__name__}") from None
    stdout, stderr = _Capture(limit), _Capture(limit + 16)  # + the pid line
    pumps = asyncio.ensure_future(
        asyncio.gather(stdout.drain(proc.stdout), stderr.drain(proc.stderr))
    )
    timed_out = False
    try:
        done, _ = await asyncio.wait({pumps}, timeout=timeout)
        if not done:
            timed_out = True
            pid = _group_of(bytes(stderr.buffer))
            await _signal_group(conn, pid, "TERM")
            done, _ = await asyncio.wait({pumps}, timeout=KILL_GRACE)
            if not done:
                await _signal_group(conn, pid, "KILL")
                await asyncio.wait({pumps}, timeout=KILL_GRACE)
        if pumps.done() and not pumps.cancelled():
            pumps.result()
            await asyncio.wait_for(proc.wait_closed(), KILL_GRACE)
    except (OSError, asyncssh.Error) as exc:
        raise SSHNotReadyError(f"SSH session failed: {type(exc).__name__}") from None
    except TimeoutError:
        pass
    finally:
        pumps.cancel()
        proc.close()
    err = bytes(stderr.buffer)
    if (match := _PID_LINE.match(err)) is not None:
        err = err[match.end() :]
    code = -1 if proc.exit_status is None else proc.exit_status
    return {
        "exit_code": 124 if timed_out else code,
        "stdout": bytes(stdout.buffer).decode(errors="replace"),
        "stderr": err[:limit].decode(errors="replace"),
        "timed_out": timed_out,
    }


def _group_of(stderr: bytes) -> int | None:
    match = _PID_LINE.match(stderr)
    return int(match.group(1)) if match else None


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and reads (discarding) the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.buffer, self.seen = limit, bytearray(), 0

    async def drain(self, stream: asyncssh.SSHReader[bytes]) -> None:
        while chunk := await stream.read(65536):
            self.seen += len(chunk)
            if len(self.buffer) < self.limit:
                self.buffer += chunk[: self.limit - len(self.buffer)]


# -- file operations ----------------------------------------------------------------------------

_GUARD = r"""
inside() {
  r=$(realpath -m -- "$1") || exit 96
  case "$r" in /app|/app/*) ;; *) echo "path leaves /app: $1" >&2; exit 99 ;; esac
}
"""

_SCRIPTS = {
    # $2: at most that many entries (empty: all).
    "list": r"""inside "$1"; [ -d "$1" ] || exit 98
if [ -z "$2" ]; then exec find -H "$1" -mindepth 1 -maxdepth 1 -printf '%y\t%s\t%m\t%f\0'; fi
find -H "$1" -mindepth 1 -maxdepth 1 -printf '%y\t%s\t%m\t%f\0' | head -z -n "$2" """,
    "check_dir": r"""inside "$1"; [ -d "$1" ] || exit 98""",
    # $2: send at most that many bytes (empty: all); the caller asks for one more than it keeps.
    "read": r"""inside "$1"; [ -f "$1" ] || exit 98
if [ -z "$2" ]; then exec cat -- "$1"; fi; exec head -c "$2" -- "$1" """,
    "check_file": r"""inside "$1"; [ -f "$1" ] || exit 98""",
    "write": r"""inside "$1"; [ -d "$1" ] && { echo "is a directory" >&2; exit 97; }
mkdir -p -- "$(dirname -- "$1")" || exit 95
cat > "$1" || exit 95
[ -z "$2" ] || chmod -- "$2" "$1" || exit 95""",
    "mkdir": r"""inside "$1"; mkdir -p -- "$1" || exit 95""",
    "move": r"""inside "$1"; inside "$2"
[ "$1" = /app ] && exit 99
[ -e "$1" ] || [ -L "$1" ] || exit 98
mkdir -p -- "$(dirname -- "$2")" || exit 95
mv -T -- "$1" "$2" || exit 95""",
    "delete": r"""inside "$1"; [ "$1" = /app ] && { echo "refusing to delete /app" >&2; exit 99; }
if [ -d "$1" ] && [ ! -L "$1" ]; then rm -rf -- "$1" || exit 95
elif [ -e "$1" ] || [ -L "$1" ]; then rm -f -- "$1" || exit 95
else exit 98; fi""",
    # Apparent bytes (what a zip of it expands to), then allocated bytes (a --sparse tar).
    "size": r"""inside "$1"; [ -d "$1" ] || exit 98; cd -- "$1" || exit 95
du -s -B1 --apparent-size -- . | cut -f1; du -s -B1 -- . | cut -f1""",
    # --sparse: holes are not stored, so `truncate -s 2T` costs nothing to archive.
    "tar": r"""inside "$1"; [ -d "$1" ] || exit 98; cd -- "$1" && exec tar --sparse -c"$2"f - .""",
}


def _script_command(name: str, *args: str) -> str:
    script = _GUARD + _SCRIPTS[name]
    return " ".join(["bash", "-c", shlex.quote(script), "_", *(shlex.quote(a) for a in args)])


def _raise_for(result: RunResult, path: str) -> None:
    message = result.stderr.decode(errors="replace").strip()[-300:]
    if result.exit_code == 0:
        return
    if result.exit_code == 99:
        raise PathNotAllowedError(f"path {path!r} resolves outside /app")
    if result.exit_code == 98:
        raise GuestFileNotFoundError(f"{path} does not exist")
    if result.timed_out:
        raise AgentError(f"file operation on {path} timed out")
    raise BadRequestError(message or f"file operation on {path} failed ({result.exit_code})")


async def _file_op(
    conn: asyncssh.SSHClientConnection,
    name: str,
    *args: str,
    stdin: bytes = b"",
    limit: int = MAX_OUTPUT_BYTES,
) -> bytes:
    result = await run(conn, _script_command(name, *args), stdin=stdin, timeout=120, limit=limit)
    _raise_for(result, args[0])
    if result.truncated:
        raise BadRequestError(f"{args[0]}: more than {limit // (1024 * 1024)} MiB")
    return result.stdout


_KINDS = {"f": "file", "d": "directory", "l": "symlink"}


async def list_dir(
    conn: asyncssh.SSHClientConnection, path: str, limit: int | None = None
) -> list[dict[str, object]]:
    """At most ``limit`` entries (which ones is the directory's order), sorted by name."""
    count = "" if limit is None else str(limit)
    raw = await _file_op(conn, "list", path, count, limit=MAX_FILE_BYTES)
    entries = []
    for record in filter(None, raw.split(b"\0")):
        kind, size, mode, name = record.decode(errors="replace").split("\t", 3)
        entries.append(
            {
                "path": f"{path.rstrip('/')}/{name}",
                "name": name,
                "path_type": _KINDS.get(kind, "other"),
                "size": int(size),
                "mode": int(mode, 8),
            }
        )
    return sorted(entries, key=lambda entry: str(entry["name"]))


async def read_file(
    conn: asyncssh.SSHClientConnection, path: str, max_bytes: int | None = None
) -> bytes:
    """The file; ``FileTooLargeError`` when it has more than ``max_bytes`` (one byte over is
    all that leaves the guest to find out)."""
    if max_bytes is None:
        return await _file_op(conn, "read", path, "", limit=MAX_FILE_BYTES)
    data = await _file_op(conn, "read", path, str(max_bytes + 1), limit=max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLargeError(f"{path} is larger than {max_bytes} bytes")
    return data


async def read_stream(conn: asyncssh.SSHClientConnection, path: str) -> AsyncIterator[bytes]:
    """Stream a file from the guest (``check_file`` first: errors come before data)."""
    proc = await conn.create_process(_script_command("read", path, ""), encoding=None)
    proc.stdin.write_eof()
    try:
        while chunk := await proc.stdout.read(65536):
            yield chunk
    finally:
        proc.close()


async def check_file(conn: asyncssh.SSHClientConnection, path: str) -> None:
    await _file_op(conn, "check_file", path)


async def write_file(
    conn: asyncssh.SSHClientConnection, path: str, content: bytes, mode: int | None
) -> None:
    await _file_op(conn, "write", path, "" if mode is None else format(mode, "o"), stdin=content)


async def make_dir(conn: asyncssh.SSHClientConnection, path: str) -> None:
    await _file_op(conn, "mkdir", path)


async def move_path(conn: asyncssh.SSHClientConnection, src: str, dst: str) -> None:
    await _file_op(conn, "move", src, dst)


async def delete_path(conn: asyncssh.SSHClientConnection, path: str) -> None:
    await _file_op(conn, "delete", path)


async def check_dir(conn: asyncssh.SSHClientConnection, path: str) -> None:
    await _file_op(conn, "check_dir", path)


async def tree_size(conn: asyncssh.SSHClientConnection, path: str) -> tuple[int, int]:
    """Apparent and allocated bytes under ``path`` (a directory inside /app)."""
    raw = await _file_op(conn, "size", path)
    try:
        apparent, allocated = (int(line) for line in raw.split())
    except ValueError:
        raise BadRequestError(f"could not measure {path}") from None
    return apparent, allocated


async def tar_stream(
    conn: asyncssh.SSHClientConnection, root: str, gzip: bool
) -> AsyncIterator[bytes]:
    """Stream ``tar`` of ``root`` from the guest (``check_dir`` first: errors come before data)."""
    proc = await conn.create_process(
        _script_command("tar", root, "z" if gzip else ""), encoding=None
    )
    proc.stdin.write_eof()
    try:
        while chunk := await proc.stdout.read(65536):
            yield chunk
    finally:
        proc.close()
