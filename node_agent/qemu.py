"""QEMU processes: boot images, overlays, the hardened command line, launch, QMP, stats.

Entry points: ``BootImage.load``, ``create_overlay``, ``open_launch_fds``, ``qemu_command``,
``launch``, ``qemu_alive``, ``read_pid``, ``write_pid``, ``qmp_execute``, ``kill_qemu``,
``process_stats``, ``probe_accel``, ``PortRegistry``, ``unix_path``, and for suspend/resume
``save_state``, ``finish_restore``, ``state_key``.

How QEMU runs (the blast radius of a QEMU escape, security review M4/H4):
- never as root nor as the agent: each VM under a uid of its own (``node_agent.uids``), started
  directly as that uid through ``/bin/bash``, which backgrounds QEMU and exits, so QEMU is not the
  agent's child and outlives it (``-daemonize`` forks after ``-sandbox`` is in force, and
  ``spawn=deny`` kills it);
- ``-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny``,
  ``-nodefaults -no-user-config``, only the devices the guest needs (virtio disk, net, rng, one
  serial port, and the virtio-serial port of the agent's channel);
- it opens no path of the agent's: the kernel, initrd, base image and overlay arrive as file
  descriptors (``/proc/self/fd/N`` for ``-kernel``/``-initrd``, which QEMU opens with plain
  ``fopen``; fd sets for the disks) and the QMP and channel sockets are bound by the agent and
  handed over, so
  the data dir stays 0700 and the VM's uid owns nothing in it;
- the serial console is a 256 KiB ring buffer in QEMU's memory (readable over QMP), never a file
  a guest can grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from qemu.qmp import QMPClient

from .errors import ImageNotFoundError, QemuError
from .identity import HOST_KEY_FILE, INSTANCE_ID_FW_CFG, GuestIdentity
from .procs import communicate
from .uids import as_guest

log = logging.getLogger("node_agent.qemu")

PORT_RANGE = (20000, 29999)  # below Linux's ephemeral range, so outbound sockets never collide
LAUNCH_TIMEOUT = 60.0
SERIAL_RING_BYTES = 256 * 1024
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


class PortInUseError(QemuError):
    """QEMU could not bind the SSH forward: another process took the port after our test."""


def host_arch() -> str:
    return platform.machine()


def qemu_binary(arch: str | None = None) -> str:
    name = f"qemu-system-{arch or host_arch()}"
    return shutil.which(name) or name


# -- boot path: machine, kernel, initramfs, command line ----------------------------------------
# The machine every VM gets, in one place: its devices (``virtio_device``), the saved states and
# golden snapshots made under it (``state_key``) and the KVM probe follow it.
MACHINE = "q35"
# ACPI stays on so QMP ``system_powerdown`` (the graceful stop) reaches the guest. Under TCG
# the kernel still hangs calibrating its TSC (measured with pit=on) unless its command line has
# ``tsc_early_khz=``: q35 stays the default (docs/node-agent.md, "Cold boot").
MICROVM_OPTIONS = "acpi=on,pit=on,pic=on,rtc=on"


def machine_type() -> str:
    """The ``-M`` value: the machine and, for microvm, its options."""
    return f"microvm,{MICROVM_OPTIONS}" if MACHINE == "microvm" else MACHINE


def virtio_device(kind: str) -> str:
    """The virtio device of ``kind`` ("blk", "net", "rng", "serial") on this machine's bus:
    PCI on q35, MMIO on microvm."""
    return f"virtio-{kind}-device" if MACHINE == "microvm" else f"virtio-{kind}-pci"


CHANNEL_PORT_NAME = "org.pequeroku.channel"  # what scripts/guest/pequeroku-channel.py opens

# The kernel an image boots: an uncompressed ``vmlinux`` (QEMU enters it through PVH, so the
# guest decompresses nothing: seconds under TCG), or the compressed ``vmlinuz`` of older images.
KERNEL_FILES = ("vmlinux", "vmlinuz")


@dataclass(frozen=True)
class BootImage:
    name: str
    kernel: Path
    initrd: Path
    rootfs: Path
    cmdline: str
    build_key: str = ""  # the image build's own key (manifest.json), when it has one

    @classmethod
    def load(cls, image_dir: Path, name: str) -> BootImage:
        base = image_dir / name
        kernel = next((base / f for f in KERNEL_FILES if (base / f).is_file()), None)
        files = {k: base / k for k in ("initrd.img", "rootfs.qcow2", "cmdline")}
        missing = [] if kernel else ["vmlinux"]
        missing += [key for key, path in files.items() if not path.is_file()]
        if missing or kernel is None:
            raise ImageNotFoundError(f"image {name!r} is incomplete: missing {', '.join(missing)}")
        build_key = ""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            build_key = str(json.loads((base / "manifest.json").read_text()).get("build_key", ""))
        return cls(
            name=name,
            kernel=kernel,
            initrd=files["initrd.img"],
            rootfs=files["rootfs.qcow2"],
            cmdline=files["cmdline"].read_text().strip(),
            build_key=build_key,
        )


# -- end of boot path ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VMFiles:
    """One VM's files, all in its directory (0700, the agent's; the VM's uid owns none)."""

    root: Path

    @classmethod
    def under(cls, root: Path) -> VMFiles:
        return cls(root=root)

    @property
    def overlay(self) -> Path:
        return self.root / "overlay.qcow2"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def launch_log(self) -> Path:
        return self.root / "qemu.log"

    @property
    def qmp_socket(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def channel_socket(self) -> Path:
        """The host end of the guest channel's virtio-serial port (``node_agent.channel``)."""
        return self.root / "channel.sock"

    @property
    def host_key(self) -> Path:
        return self.root / HOST_KEY_FILE

    @property
    def record(self) -> Path:
        return self.root / "vm.json"

    @property
    def state(self) -> Path:
        """Memory and device state of a suspended VM; valid only with the overlay beside it."""
        return self.root / "memory.state"

    @property
    def state_partial(self) -> Path:
        return self.root / "memory.state.partial"


@contextlib.contextmanager
def unix_path(path: Path) -> Iterator[str]:
    """A usable AF_UNIX address for ``path``, whose length may pass the kernel's 107 bytes.

    Deep data dirs (pytest's) do; the directory is then reached through ``/proc/self/fd``
    instead of falling back to a shared, predictable place such as /tmp.
    """
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


async def _run(*cmd: str, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
    )
    try:
        out, _ = await communicate(proc, timeout=timeout)
    except TimeoutError:
        raise QemuError(f"{cmd[0]} did not finish in {timeout:.0f}s") from None
    return proc.returncode or 0, out.decode(errors="replace")


async def create_overlay(base: Path, overlay: Path, disk_gib: int | None) -> None:
    """A qcow2 overlay on ``base``, ``disk_gib`` large (None: the base's size)."""
    size = [] if disk_gib is None else [f"{disk_gib}G"]
    code, out = await _run(
        "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
        str(overlay), *size, timeout=60,
    )  # fmt: skip
    if code != 0:
        raise QemuError(f"qemu-img create failed: {out.strip()[-500:]}")
    overlay.chmod(0o600)


async def resize_overlay(overlay: Path, disk_gib: int) -> None:
    """Grow an overlay's virtual size (the guest grows its filesystem into it)."""
    code, out = await _run("qemu-img", "resize", "-q", str(overlay), f"{disk_gib}G", timeout=60)
    if code != 0:
        raise QemuError(f"qemu-img resize failed: {out.strip()[-500:]}")


async def virtual_size(image: Path) -> int:
    code, out = await _run("qemu-img", "info", "--output=json", str(image), timeout=60)
    try:
        return int(json.loads(out)["virtual-size"]) if code == 0 else 0
    except (ValueError, KeyError, TypeError):
        return 0


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-M", machine_type(), "-cpu", "host"]
    return ["-accel", "tcg", "-M", machine_type()]


def kvm_gid() -> int | None:
    with contextlib.suppress(OSError):
        return os.stat("/dev/kvm").st_gid
    return None


def guest_groups(accel: str) -> tuple[int, ...]:
    """Supplementary groups of a VM's QEMU: only the one that opens /dev/kvm, under KVM."""
    gid = kvm_gid() if accel == "kvm" else None
    return (gid,) if gid is not None and gid != 0 else ()


def _readable_by_all(path: Path) -> None:
    if not path.stat().st_mode & stat.S_IROTH:
        raise QemuError(
            f"{path} must be readable by all (chmod 644): QEMU runs under an unprivileged uid"
        )


@dataclass
class LaunchFds:
    """Everything QEMU opens, opened by the agent and inherited by QEMU under these numbers."""

    kernel: int
    initrd: int
    base: int
    overlay: int
    qmp: int
    host_key: int
    channel: int
    sockets: list[socket.socket] = field(default_factory=list, repr=False)
    state: int | None = None  # a saved state to restore instead of booting (``-incoming``)

    def numbers(self) -> list[int]:
        fds = [
            self.kernel,
            self.initrd,
            self.base,
            self.overlay,
            self.qmp,
            self.host_key,
            self.channel,
        ]
        return fds if self.state is None else [*fds, self.state]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for fd in (self.kernel, self.initrd, self.base, self.overlay, self.host_key, self.state):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def bind_unix(path: Path) -> socket.socket:
    """A listening socket at ``path`` (0600, the agent's) for QEMU to serve: QMP, the channel."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_path(path) as address:
            sock.bind(address)
        path.chmod(0o600)
        sock.listen(4)
    except BaseException:
        sock.close()
        raise
    return sock


def open_launch_fds(
    image: BootImage, files: VMFiles, host_key_fd: int, state: Path | None = None
) -> LaunchFds:
    """Open the VM's files for QEMU; the caller closes them once QEMU has them (``close``).

    With ``state``, QEMU restores that saved state (read from the inherited descriptor).
    """
    for path in (image.kernel, image.initrd):
        _readable_by_all(path)
    opened: list[int] = []
    sockets: list[socket.socket] = []
    try:
        for path, flags in (
            (image.kernel, os.O_RDONLY),
            (image.initrd, os.O_RDONLY),
            (image.rootfs, os.O_RDONLY),
            (files.overlay, os.O_RDWR | os.O_NOFOLLOW),
        ):
            opened.append(os.open(path, flags | os.O_CLOEXEC))
        sockets.append(bind_unix(files.qmp_socket))
        sockets.append(bind_unix(files.channel_socket))
    except BaseException:
        for fd in opened:
            os.close(fd)
        for sock in sockets:
            sock.close()
        os.close(host_key_fd)
        raise
    kernel, initrd, base, overlay = opened
    qmp, channel = sockets
    fds = LaunchFds(
        kernel, initrd, base, overlay, qmp.fileno(), host_key_fd, channel.fileno(), sockets=sockets
    )
    if state is not None:
        try:
            fds.state = os.open(state, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except BaseException:
            fds.close()
            raise
    return fds


def qemu_command(
    *,
    accel: str,
    image: BootImage,
    fds: LaunchFds,
    vcpus: int,
    memory_mb: int,
    ssh_port: int,
    identity: GuestIdentity,
    node_key: asyncssh.SSHKey,
    restrict_network: bool = False,
) -> list[str]:
    netdev = f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    if restrict_network:
        # --guest-egress none: slirp itself routes nothing out (the nftables policy is the
        # first layer); the SSH forward still works.
        netdev += ",restrict=on"
    return [
        qemu_binary(),
        "-name",
        f"pequeroku-{identity.instance_id}",
        "-nodefaults",
        "-no-user-config",
        "-sandbox",
        SANDBOX,
        *accel_args(accel),
        "-smp",
        str(vcpus),
        "-m",
        str(memory_mb),
        "-kernel",
        f"/proc/self/fd/{fds.kernel}",
        "-initrd",
        f"/proc/self/fd/{fds.initrd}",
        "-append",
        image.cmdline,
        "-add-fd",
        f"fd={fds.base},set=1,opaque=base",
        "-add-fd",
        f"fd={fds.overlay},set=2,opaque=overlay",
        "-blockdev",
        "driver=file,node-name=base-file,filename=/dev/fdset/1,read-only=on",
        "-blockdev",
        "driver=qcow2,node-name=base,file=base-file,read-only=on",
        "-blockdev",
        "driver=file,node-name=disk-file,filename=/dev/fdset/2",
        "-blockdev",
        "driver=qcow2,node-name=disk,file=disk-file,backing=base",
        "-device",
        f"{virtio_device('blk')},drive=disk",
        "-netdev",
        netdev,
        "-device",
        f"{virtio_device('net')},netdev=n0",
        # Guests otherwise wait for entropy at boot (sshd, systemd-random-seed) under TCG.
        "-device",
        virtio_device("rng"),
        # A generation id of this VM's own: a guest restored from a golden snapshot sees it
        # change and reseeds its kernel RNG at once (Linux vmgenid), so clones never share it.
        "-device",
        f"vmgenid,guid={identity.generation_id}",
        *identity.qemu_args(node_key, fds.host_key),
        "-chardev",
        f"socket,id=qmp,fd={fds.qmp},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
        # The agent's channel (node_agent.channel): one virtio-serial port, named for the guest's
        # daemon to find; its host end is the socket the agent bound.
        "-device",
        f"{virtio_device('serial')},id=vser0",
        "-chardev",
        f"socket,id=channel,fd={fds.channel},server=on,wait=off",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=channel,name={CHANNEL_PORT_NAME}",
        "-chardev",
        f"ringbuf,id=serial0,size={SERIAL_RING_BYTES}",
        "-serial",
        "chardev:serial0",
        "-display",
        "none",
        "-no-reboot",
        # Restore a suspended VM: the same machine and devices, memory and device state from
        # the saved stream; the guest stays paused until ``finish_restore``.
        *(["-incoming", f"fd:{fds.state}"] if fds.state is not None else []),
    ]


async def spawn_detached(
    cmd: list[str], *, uid: int, groups: tuple[int, ...], pass_fds: list[int], output: Path
) -> int:
    """Start ``cmd`` as ``uid`` in a session of its own, not as our child; return its pid.

    ``/bin/bash`` runs as the VM's uid, backgrounds the command and exits: the command is
    reparented to init, so the agent can exit, crash or restart without touching it. (Plain
    ``subprocess`` in a thread: uvloop's subprocess support cannot change uids.)
    """
    log_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    script = f'"$@" </dev/null >&{log_fd} 2>&1 {log_fd}>&- & echo $!'
    try:
        done = await asyncio.to_thread(
            subprocess.run, ["/bin/bash", "-c", script, "qemu-launcher", *cmd],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
            start_new_session=True, pass_fds=[*pass_fds, log_fd], **as_guest(uid, groups),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise QemuError("the QEMU launcher did not finish") from None
    finally:
        os.close(log_fd)
    try:
        return int(done.stdout.strip())
    except ValueError:
        tail = done.stderr.decode(errors="replace")[-300:]
        raise QemuError(f"could not start qemu: {tail}") from None


def _exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


async def launch(
    cmd: list[str],
    *,
    uid: int,
    groups: tuple[int, ...],
    fds: LaunchFds,
    instance_id: str,
    qmp_socket: Path,
    pidfile: Path,
    output: Path,
) -> int:
    """Start QEMU and return its pid once it answers on QMP (its devices are all up).

    The pidfile is written as soon as QEMU exists, so an agent that dies meanwhile still finds
    (and adopts or kills) it; QEMU is killed when the launch fails or is cancelled.
    """
    pid = await spawn_detached(cmd, uid=uid, groups=groups, pass_fds=fds.numbers(), output=output)
    write_pid(pidfile, pid)
    try:
        await _wait_launched(pid, instance_id, qmp_socket)
    except BaseException:
        with contextlib.suppress(QemuError):
            await kill_qemu(pid, instance_id)
        raise
    if _exited(pid):
        out = output.read_text(errors="replace").strip()
        if "host forwarding" in out or "Address already in use" in out:
            raise PortInUseError(out[-500:])
        raise QemuError(f"qemu failed to start: {out[-1000:]}")
    return pid


async def _wait_launched(pid: int, instance_id: str, qmp_socket: Path) -> None:
    """Return once QMP answers or the process is gone (the caller tells which)."""
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        if qemu_alive(pid, instance_id):
            with contextlib.suppress(Exception):  # not listening yet, or still initialising
                await qmp_execute(qmp_socket, "query-status", timeout=2.0)
                return
        await asyncio.sleep(0.05)
    raise QemuError(f"qemu did not start in {LAUNCH_TIMEOUT:.0f}s")


def read_pid(pidfile: Path) -> int | None:
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as source:
            return int(source.read(32).strip())
    except (OSError, ValueError):
        return None


def write_pid(pidfile: Path, pid: int) -> None:
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pidfile)


def qemu_alive(pid: int | None, instance_id: str) -> bool:
    """True when ``pid`` is a live QEMU started for ``instance_id`` (pids get reused)."""
    if pid is None:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not args or not os.path.basename(args[0]).startswith(b"qemu-system"):
        return False  # a zombie has an empty cmdline
    marker = f"name={INSTANCE_ID_FW_CFG},string={instance_id}".encode()
    return marker in args


def process_uid(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return Path(f"/proc/{pid}").stat().st_uid
    return None


async def qmp_execute(
    sock: Path, command: str, arguments: dict[str, object] | None = None, timeout: float = 5.0
) -> object:
    client = QMPClient("pequeroku-node-agent")
    try:
        with unix_path(sock) as address:
            await asyncio.wait_for(client.connect(address), timeout)
        return await asyncio.wait_for(client.execute(command, arguments), timeout)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


# -- suspend and resume ----------------------------------------------------------------------

STATE_FDNAME = "pequeroku-state"
UNCAPPED_BANDWIDTH = 64 * 2**30  # bytes/s: QEMU's default cap (128 MiB/s) would triple a save


async def _qmp_session(sock: Path, timeout: float) -> QMPClient:
    client = QMPClient("pequeroku-node-agent")
    with unix_path(sock) as address:
        await asyncio.wait_for(client.connect(address), timeout)
    return client


def _send_fd(client: QMPClient, fd: int) -> None:
    """Pass ``fd`` to QEMU (SCM_RIGHTS) for the next ``getfd``.

    ``QMPClient.send_fd_scm`` reaches into asyncio's socket wrapper, which uvloop's lacks; a
    duplicate of the connected socket sends the same way.
    """
    writer = client._writer
    assert writer is not None  # noqa: S101
    raw = writer.transport.get_extra_info("socket")
    with socket.socket(fileno=os.dup(raw.fileno())) as sock:
        sock.sendmsg([b" "], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))])


async def save_state(sock: Path, out_fd: int, timeout: float = 120.0) -> None:
    """Pause the guest and stream its memory and device state into ``out_fd``.

    The guest stays paused afterwards (the caller quits QEMU); on failure it is resumed and
    ``QemuError`` raised. ``fd:`` migration, because the sandbox forbids QEMU to spawn ``exec:``.
    """
    client = await _qmp_session(sock, 5.0)
    try:
        await client.execute("migrate-set-parameters", {"max-bandwidth": UNCAPPED_BANDWIDTH})
        await client.execute("stop")
        _send_fd(client, out_fd)
        await client.execute("getfd", {"fdname": STATE_FDNAME})
        await client.execute("migrate", {"uri": f"fd:{STATE_FDNAME}"})
        deadline = time.monotonic() + timeout
        while True:
            info = await asyncio.wait_for(client.execute("query-migrate"), 5.0)
            status = info.get("status") if isinstance(info, dict) else None
            if status == "completed":
                return
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                reason = info.get("error-desc", status) if isinstance(info, dict) else status
                with contextlib.suppress(Exception):
                    await client.execute("migrate_cancel")
                    await client.execute("cont")
                raise QemuError(f"saving the VM's state failed: {reason}")
            await asyncio.sleep(0.02)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def finish_restore(sock: Path, pid: int, instance_id: str, timeout: float = 60.0) -> None:
    """Wait for QEMU to load the state it was started with, then let the guest run.

    Raises ``QemuError`` when QEMU exits (an unusable state: QEMU quits on a failed load) or
    the load does not finish in ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not qemu_alive(pid, instance_id):
            raise QemuError("qemu could not load the saved state")
        try:
            status = await qmp_execute(sock, "query-status", timeout=5.0)
        except Exception:
            await asyncio.sleep(0.02)
            continue
        state = status.get("status") if isinstance(status, dict) else None
        if state == "running":
            return
        if state in ("paused", "postmigrate", "prelaunch"):
            await qmp_execute(sock, "cont")
            return
        await asyncio.sleep(0.02)  # "inmigrate": still loading
    raise QemuError(f"the saved state did not load in {timeout:.0f}s")


_QEMU_VERSION: dict[str, str] = {}
# The devices ``qemu_command`` gives a VM (the machine itself is in ``accel_args``): a saved
# state only loads into the same set.
MACHINE_LAYOUT = "virtio-blk virtio-net virtio-rng vmgenid fw_cfg ringbuf-serial/1 virtio-serial/1"


def qemu_version() -> str:
    binary = qemu_binary()
    if binary not in _QEMU_VERSION:
        try:
            out = subprocess.run(  # noqa: S603 (fixed arguments)
                [binary, "--version"], capture_output=True, timeout=30, check=False
            ).stdout
            _QEMU_VERSION[binary] = out.decode(errors="replace").splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            _QEMU_VERSION[binary] = "unknown"
    return _QEMU_VERSION[binary]


def _file_tag(path: Path) -> str:
    info = path.stat()
    return f"{path.name}:{info.st_size}:{info.st_mtime_ns}"


def state_key(image: BootImage, accel: str, vcpus: int, memory_mb: int) -> str:
    """What a saved state depends on: restoring it under anything else is refused.

    The QEMU build, the machine (type, options, bus) and accelerator, the VM's size, and the
    image: its build key, kernel (which file, size, mtime), initrd, root disk and command line.
    Golden snapshots are keyed the same way, so none survives a change of any of these.
    """
    parts = [
        MACHINE_LAYOUT,
        virtio_device("blk"),
        qemu_version(),
        " ".join(accel_args(accel)),
        f"smp={vcpus}",
        f"mem={memory_mb}",
        f"image={image.build_key}",
        *(_file_tag(path) for path in (image.kernel, image.initrd, image.rootfs)),
        image.cmdline,
    ]
    return "|".join(parts)


async def wait_exit(pid: int, instance_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while qemu_alive(pid, instance_id):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def kill_qemu(pid: int, instance_id: str) -> None:
    if qemu_alive(pid, instance_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not await wait_exit(pid, instance_id, 10.0):
        raise QemuError(f"qemu pid {pid} survived SIGKILL")


@dataclass
class CpuSample:
    ts: float
    cpu_seconds: float


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _status_fields(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _io_counters(pid: int) -> dict[str, int]:
    counters: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("read_bytes", "write_bytes"):
                counters[key] = int(value)
    return {
        "read_bytes": counters.get("read_bytes", 0),
        "write_bytes": counters.get("write_bytes", 0),
    }


def cpu_sample(pid: int) -> CpuSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return CpuSample(ts=time.monotonic(), cpu_seconds=(utime + stime) / _clock_ticks())


def process_stats(pid: int, previous: CpuSample, current: CpuSample) -> dict[str, object]:
    status = _status_fields(pid)
    rss_kib = int(status.get("VmRSS", "0 kB").split()[0])
    elapsed = max(current.ts - previous.ts, 1e-6)
    return {
        "ts": time.time(),
        "cpu_percent": round(100.0 * (current.cpu_seconds - previous.cpu_seconds) / elapsed, 2),
        "rss_bytes": rss_kib * 1024,
        "rss_mib": round(rss_kib / 1024, 2),
        "num_threads": int(status.get("Threads", "0")),
        "io": _io_counters(pid),
    }


def kvm_device_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kernel(image_dir: Path) -> Path | None:
    for name in KERNEL_FILES:
        candidate = image_dir / "default" / name
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    boot = sorted(Path("/boot").glob("vmlinuz-*"))
    return boot[-1] if boot else None


async def probe_accel(image_dir: Path, probe_uid: int, timeout: float = 8.0) -> str:
    """Boot a kernel under KVM for a few seconds; "kvm" only if it prints its banner.

    ``/dev/kvm`` can exist on hosts where KVM aborts or hangs (nested paravirtual setups), so
    only a kernel that actually starts counts. The probe runs unprivileged, like every QEMU.
    """
    if not kvm_device_usable():
        log.info("accelerator: tcg (/dev/kvm is not usable)")
        return "tcg"
    kernel = probe_kernel(image_dir)
    if kernel is None:
        log.info("accelerator: tcg (no kernel to probe KVM with)")
        return "tcg"
    try:
        ok = await _kernel_starts_under_kvm(kernel, timeout, probe_uid)
    except (OSError, QemuError) as exc:
        log.info("accelerator: tcg (KVM probe could not run: %s)", exc)
        return "tcg"
    accel = "kvm" if ok else "tcg"
    log.info("accelerator: %s (KVM probe %s)", accel, "booted" if ok else "failed")
    return accel


async def _kernel_starts_under_kvm(kernel: Path, timeout: float, uid: int) -> bool:
    return await asyncio.to_thread(_kernel_starts_under_kvm_sync, kernel, timeout, uid)


def _kernel_starts_under_kvm_sync(kernel: Path, timeout: float, uid: int) -> bool:
    fd = os.open(kernel, os.O_RDONLY | os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(  # noqa: S603 (fixed arguments, no shell)
            [qemu_binary(), *accel_args("kvm"), "-m", "256",
             "-kernel", f"/proc/self/fd/{fd}", "-append", "console=ttyS0 panic=-1",
             "-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot",
             "-nodefaults", "-no-user-config", "-sandbox", SANDBOX],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, pass_fds=[fd], **as_guest(uid, guest_groups("kvm")),
        )  # fmt: skip
    finally:
        os.close(fd)
    assert proc.stdout is not None  # noqa: S101
    os.set_blocking(proc.stdout.fileno(), False)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            chunk = proc.stdout.read(4096)
            if chunk:
                seen = (seen + chunk)[-8192:]
                if b"Linux version" in seen:
                    return True
            else:
                time.sleep(0.05)
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        proc.stdout.close()


class PortRegistry:
    """Hands out loopback ports for SSH forwards; never the same port to two known VMs."""

    def __init__(self, low: int = PORT_RANGE[0], high: int = PORT_RANGE[1]) -> None:
        self._low, self._high = low, high
        self._lock = threading.Lock()
        self._owners: dict[int, str] = {}

    def claim(self, port: int, owner: str) -> bool:
        with self._lock:
            if self._owners.get(port, owner) != owner:
                return False
            self._owners[port] = owner
            return True

    def reserve(self, owner: str, avoid: set[int] | None = None) -> int:
        with self._lock:
            for _ in range(500):
                port = random.randint(self._low, self._high)  # noqa: S311
                if port in self._owners or (avoid and port in avoid):
                    continue
                if _port_free(port):
                    self._owners[port] = owner
                    return port
        raise QemuError("no free port for the SSH forward")

    def release(self, owner: str) -> None:
        with self._lock:
            for port in [p for p, o in self._owners.items() if o == owner]:
                del self._owners[port]

    def owner_of(self, port: int) -> str | None:
        return self._owners.get(port)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
