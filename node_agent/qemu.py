"""QEMU processes: boot images, overlays, launch, liveness, QMP, stats and the KVM probe.

Entry points: ``BootImage.load``, ``create_overlay``, ``qemu_command``, ``launch``,
``qemu_alive``, ``read_pid``, ``qmp_execute``, ``kill_qemu``, ``process_stats``,
``probe_accel``, ``PortRegistry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import platform
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import QMPClient

from .errors import ImageNotFoundError, QemuError

log = logging.getLogger("node_agent.qemu")

PORT_RANGE = (20000, 29999)  # below Linux's ephemeral range, so outbound sockets never collide
INSTANCE_ID_FW_CFG = "opt/pequeroku/instance_id"
AUTHORIZED_KEYS_FW_CFG = "opt/pequeroku/authorized_keys"
LAUNCH_TIMEOUT = 60.0


class PortInUseError(QemuError):
    """QEMU could not bind the SSH forward: another process took the port after our test."""


def host_arch() -> str:
    return platform.machine()


def qemu_binary(arch: str | None = None) -> str:
    return f"qemu-system-{arch or host_arch()}"


@dataclass(frozen=True)
class BootImage:
    name: str
    kernel: Path
    initrd: Path
    rootfs: Path
    cmdline: str

    @classmethod
    def load(cls, image_dir: Path, name: str) -> BootImage:
        base = image_dir / name
        files = {key: base / key for key in ("vmlinuz", "initrd.img", "rootfs.qcow2", "cmdline")}
        missing = [key for key, path in files.items() if not path.is_file()]
        if missing:
            raise ImageNotFoundError(f"image {name!r} is incomplete: missing {', '.join(missing)}")
        return cls(
            name=name,
            kernel=files["vmlinuz"],
            initrd=files["initrd.img"],
            rootfs=files["rootfs.qcow2"],
            cmdline=files["cmdline"].read_text().strip(),
        )


@dataclass(frozen=True)
class VMFiles:
    """Where one VM's files live; the QMP socket may sit outside ``root`` (see ``socket_path``)."""

    root: Path
    qmp_socket: Path

    @classmethod
    def under(cls, root: Path) -> VMFiles:
        return cls(root=root, qmp_socket=socket_path(root))

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
    def serial_log(self) -> Path:
        return self.root / "serial.log"

    @property
    def record(self) -> Path:
        return self.root / "vm.json"


def socket_path(vm_dir: Path) -> Path:
    # AF_UNIX paths are limited to 107 bytes; deep data dirs (pytest tmp dirs) exceed that.
    preferred = vm_dir / "qmp.sock"
    if len(os.fsencode(preferred)) < 100:
        return preferred
    digest = hashlib.sha256(os.fsencode(vm_dir)).hexdigest()[:20]
    return Path("/tmp") / f"pequeroku-{digest}.qmp"  # noqa: S108


async def _run(*cmd: str, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise QemuError(f"{cmd[0]} did not finish in {timeout:.0f}s") from None
    return proc.returncode or 0, out.decode(errors="replace")


async def create_overlay(base: Path, overlay: Path, disk_gib: int) -> None:
    code, out = await _run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        str(base),
        str(overlay),
        f"{disk_gib}G",
        timeout=60,
    )
    if code != 0:
        raise QemuError(f"qemu-img create failed: {out.strip()[-500:]}")


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-M", "q35", "-cpu", "host"]
    return ["-accel", "tcg", "-M", "q35"]


def qemu_command(
    *,
    accel: str,
    image: BootImage,
    files: VMFiles,
    vcpus: int,
    memory_mb: int,
    ssh_port: int,
    instance_id: str,
    authorized_keys: Path,
) -> list[str]:
    return [
        qemu_binary(),
        "-name",
        f"pequeroku-{instance_id}",
        *accel_args(accel),
        "-smp",
        str(vcpus),
        "-m",
        str(memory_mb),
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        image.cmdline,
        "-drive",
        f"file={files.overlay},if=virtio,format=qcow2",
        "-netdev",
        f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device",
        "virtio-net-pci,netdev=n0",
        # Guests otherwise wait for entropy at boot (sshd, systemd-random-seed) under TCG.
        "-device",
        "virtio-rng-pci",
        "-fw_cfg",
        f"name={INSTANCE_ID_FW_CFG},string={instance_id}",
        "-fw_cfg",
        f"name={AUTHORIZED_KEYS_FW_CFG},file={authorized_keys}",
        "-smbios",
        f"type=1,serial={instance_id}",
        "-daemonize",
        "-pidfile",
        str(files.pidfile),
        "-qmp",
        f"unix:{files.qmp_socket},server=on,wait=off",
        "-serial",
        f"file:{files.serial_log}",
        "-display",
        "none",
        "-no-reboot",
    ]


async def launch(cmd: list[str], output: Path) -> None:
    """Run QEMU with ``-daemonize``: returns once the VM runs detached from the agent.

    Output goes to a file, not a pipe: the daemon keeps the inherited descriptors open, so a
    pipe would never reach end-of-file while the VM runs.
    """
    with output.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = await asyncio.wait_for(proc.wait(), LAUNCH_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise QemuError(f"qemu did not daemonize in {LAUNCH_TIMEOUT:.0f}s") from None
    if code == 0:
        return
    out = output.read_text(errors="replace").strip()
    if "host forwarding" in out or "Address already in use" in out:
        raise PortInUseError(out[-500:])
    raise QemuError(f"qemu failed to start: {out[-1000:]}")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


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


async def qmp_execute(sock: Path, command: str, timeout: float = 5.0) -> object:
    client = QMPClient("pequeroku-node-agent")
    await asyncio.wait_for(client.connect(str(sock)), timeout)
    try:
        return await asyncio.wait_for(client.execute(command), timeout)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


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
    candidate = image_dir / "default" / "vmlinuz"
    if candidate.is_file():
        return candidate
    boot = sorted(Path("/boot").glob("vmlinuz-*"))
    return boot[-1] if boot else None


async def probe_accel(image_dir: Path, timeout: float = 8.0) -> str:
    """Boot a kernel under KVM for a few seconds; "kvm" only if it prints its banner.

    ``/dev/kvm`` can exist on hosts where KVM aborts or hangs (nested paravirtual setups), so
    only a kernel that actually starts counts.
    """
    if not kvm_device_usable():
        log.info("accelerator: tcg (/dev/kvm is not usable)")
        return "tcg"
    kernel = probe_kernel(image_dir)
    if kernel is None:
        log.info("accelerator: tcg (no kernel to probe KVM with)")
        return "tcg"
    ok = await _kernel_starts_under_kvm(kernel, timeout)
    accel = "kvm" if ok else "tcg"
    log.info("accelerator: %s (KVM probe %s)", accel, "booted" if ok else "failed")
    return accel


async def _kernel_starts_under_kvm(kernel: Path, timeout: float) -> bool:
    proc = await asyncio.create_subprocess_exec(
        qemu_binary(),
        *accel_args("kvm"),
        "-m",
        "256",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
        "-serial",
        "stdio",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-nodefaults",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None  # noqa: S101
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await proc.stdout.read(4096):
                seen = (seen + chunk)[-8192:]
                if b"Linux version" in seen:
                    return True
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    return False


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
