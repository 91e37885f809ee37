"""The VMs of one node: their records on disk, QEMU processes and guest connections.

Entry points (``VMManager``): ``startup``, ``shutdown``, ``health``, ``create``, ``start``,
``stop``, ``suspend``, ``delete``, ``status``, ``list``, ``stats``, ``guest``.

Power-off has two kinds. ``suspend`` syncs the guest's disks, saves its memory and device state
next to its overlay (``memory.state``) and quits QEMU, so a suspended VM holds no host RAM; the
next ``start`` restores it (processes, open files and shells come back) and then deletes the
state, which is only valid with the disk exactly as it was. ``stop`` (ACPI powerdown) discards
any saved state: the next start is a cold boot. A state that is missing, made by another QEMU or
image, or that QEMU cannot load also means a cold boot from the overlay (which the sync made
complete), and the status says why (``last_boot``, ``boot_detail``).

Each VM lives in ``<data-dir>/vms/<vm_id>/`` (``vm.json``, overlay, SSH host key, pidfile,
QEMU's output, QMP socket), all private to the agent. QEMU runs detached under the VM's own uid
(``node_agent.qemu``, ``node_agent.uids``), so the agent can exit or crash without touching the
VMs; on start the agent re-adopts every VM whose pidfile names a live QEMU started for that VM.
Nothing is created or started until the guest egress policy is in force
(``node_agent.isolation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncssh

from . import guest, qemu
from .channel import GuestChannel
from .config import AgentConfig
from .errors import (
    AgentError,
    BadRequestError,
    QemuError,
    VMNotFoundError,
    VMNotRunningError,
)
from .golden import Golden, GoldenStore, shape_name
from .guest import Adoption, GuestConnection, wait_for_banner
from .identity import GuestIdentity, ensure_private_dir, load_or_create_node_key
from .isolation import Isolation
from .uids import UidPool

log = logging.getLogger("node_agent.vms")

VM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Until the guest's sshd answers, its forwarded port is probed this often: a refused probe costs
# the guest nothing, and each interval is added to every cold boot (a few seconds under TCG).
WARMUP_INTERVAL = 0.05
WARMUP_BACKOFF = 0.5  # after a banner, a login that still fails (sshd half up) is retried
GOLDEN_BOOT_TIMEOUT = 600.0
GOLDEN_SETTLE_TIMEOUT = 180.0  # the script waits up to 120 s for systemd
TEMPLATE_SPARES_DELAY = 1.5  # the daemon starts its spare shell 0.2 s after a command
SYNC_TIMEOUT = 60.0
# A restored guest's channel daemon is running already: no answer in this long means none.
CHANNEL_RESTORED_TIMEOUT = 5.0
CHANNEL_RETRY_TIMEOUT = 2.0
CHANNEL_BOOT_TIMEOUT = 300.0  # a cold boot's daemon answers once the guest has started it
# After a restore the guest's first minute belongs to its user's calls (over the channel): the
# SSH connection (terminals, files) is opened this much later, not competing for its one CPU.
SSH_AFTER_CHANNEL = 1.0


@dataclass
class VMRecord:
    """What ``vm.json`` holds: the spec plus what the agent chose for this VM."""

    vm_id: str
    vcpus: int
    memory_mb: int
    disk_gib: int
    image: str
    instance_id: str
    ssh_port: int | None = None
    uid: int | None = None  # the uid its QEMU runs under (node_agent.uids)
    accel: str | None = None
    expected_running: bool = False
    created_at: float = field(default_factory=time.time)
    suspended: bool = False  # memory.state holds the VM; the next start restores it
    suspending: bool = False  # a suspend began and has not finished (the node may have died)
    state_key: str = ""  # what memory.state was saved under (qemu.state_key)
    last_boot: str = ""  # "cold" or "restored": how QEMU last started
    boot_detail: str = ""  # why the last start was a cold boot when a restore was expected
    # Created from a golden snapshot and not yet given its identity: the template's.
    adopt_instance_id: str = ""
    adopt_host_key: str = ""
    adopt_grow: bool = False  # the disk is larger than the template's: grow the filesystem

    @classmethod
    def load(cls, path: Path) -> VMRecord:
        data = json.loads(path.read_text())
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


class ManagedVM:
    def __init__(
        self,
        record: VMRecord,
        files: qemu.VMFiles,
        key: asyncssh.SSHKey,
        identity: GuestIdentity,
    ) -> None:
        self.record, self.files, self.identity = record, files, identity
        self.lock = asyncio.Lock()
        self.guest = GuestConnection(
            record.vm_id,
            record.instance_id,
            lambda: record.ssh_port,
            key,
            identity.host_public_key,
        )
        self.channel = GuestChannel(record.vm_id, files.channel_socket)
        self.warmup: asyncio.Task[None] | None = None
        self.channel_phase: asyncio.Task[None] | None = None
        self.cpu_sample: qemu.CpuSample | None = None
        self.expect_template_identity()

    def expect_template_identity(self) -> None:
        """A guest restored from a golden snapshot answers as the template until adopted."""
        if not self.record.adopt_instance_id:
            self.guest.adoption = None
            return
        self.guest.adoption = Adoption(
            host_key=asyncssh.import_public_key(self.record.adopt_host_key),
            instance_id=self.record.adopt_instance_id,
            grow=self.record.adopt_grow,
            done=self.adopted,
        )

    def adopted(self) -> None:
        self.record.adopt_instance_id = self.record.adopt_host_key = ""
        self.record.adopt_grow = False
        self.save()

    @property
    def pid(self) -> int | None:
        return qemu.read_pid(self.files.pidfile)

    def alive(self) -> bool:
        return qemu.qemu_alive(self.pid, self.record.instance_id)

    def save(self) -> None:
        self.record.save(self.files.record)

    def answers(self) -> bool:
        """The guest answers the agent: over its channel or SSH."""
        return self.channel.ready() or self.guest.ready()

    async def disconnect(self) -> None:
        await self.channel.close()
        await self.guest.close()

    def status(self) -> dict[str, object]:
        alive = self.alive()
        if alive:
            state, detail = "running", "" if self.answers() else "booting"
        elif self.record.expected_running:
            state, detail = "error", "qemu process exited unexpectedly"
        else:
            state, detail = "stopped", ""
        return {
            "vm_id": self.record.vm_id,
            "state": state,
            "vcpus": self.record.vcpus,
            "memory_mb": self.record.memory_mb,
            "disk_gib": self.record.disk_gib,
            "ssh_ready": alive and self.answers(),
            "detail": detail,
            "suspended": not alive and self.record.suspended,
            "last_boot": self.record.last_boot,
            "boot_detail": self.record.boot_detail,
        }


class VMManager:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        ensure_private_dir(config.data_dir)
        self.vms_dir = ensure_private_dir(config.data_dir / "vms")
        self.ports = qemu.PortRegistry()
        self.vms: dict[str, ManagedVM] = {}
        self._create_lock = asyncio.Lock()
        self._accel: asyncio.Task[str] | None = None
        self._background: list[asyncio.Task[None]] = []
        self.key = load_or_create_node_key(config.data_dir / "ssh")
        self.uids = UidPool(*config.vm_uid_range, claims_dir=config.uid_claims_dir)
        self.isolation = Isolation(config, self.uids)
        self.golden = GoldenStore(config.data_dir)
        self._golden_builds: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle of the agent -------------------------------------------------------------

    async def startup(self) -> None:
        for record_path in sorted(self.vms_dir.glob("*/vm.json")):
            self._adopt(record_path)
        known_uids = [vm.record.uid for vm in self.vms.values() if vm.record.uid is not None]
        self._background += [
            asyncio.create_task(self.isolation.start(known_uids)),
            asyncio.create_task(self.isolation.watch()),
        ]
        if self.config.accel == "auto":
            probe_uid = self.uids.probe_uid
            self._accel = asyncio.create_task(qemu.probe_accel(self.config.image_dir, probe_uid))
        else:
            self._accel = asyncio.create_task(_constant(self.config.accel))
            log.info("accelerator: %s (forced by --accel)", self.config.accel)

    def _adopt(self, record_path: Path) -> None:
        try:
            record = VMRecord.load(record_path)
            identity = GuestIdentity.load_or_create(record_path.parent, record.instance_id)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("skipping unreadable %s: %s", record_path, exc)
            return
        vm = ManagedVM(record, qemu.VMFiles.under(record_path.parent), self.key, identity)
        self.vms[record.vm_id] = vm
        if vm.alive() and record.ssh_port is not None:
            self.ports.claim(record.ssh_port, record.vm_id)
            if record.suspending:
                self._background.append(asyncio.create_task(self._abandon_suspend(vm)))
            self._start_warmup(vm)
            log.info("adopted running VM %s (pid %s)", record.vm_id, vm.pid)
            pid = vm.pid
            if pid is not None and qemu.process_uid(pid) != record.uid:
                log.warning(
                    "VM %s runs under uid %s, not a VM uid of its own: stop and start it to "
                    "isolate it",
                    record.vm_id,
                    qemu.process_uid(pid),
                )
        else:
            log.info("found VM %s, not running", record.vm_id)

    async def _abandon_suspend(self, vm: ManagedVM) -> None:
        """A previous agent died mid-suspend with QEMU alive: the guest runs on, paused no more."""
        async with vm.lock:
            with contextlib.suppress(Exception):
                await qemu.qmp_execute(vm.files.qmp_socket, "cont")
            self._discard_state(vm)
            vm.record.suspending = vm.record.suspended = False
            vm.save()
            log.info("VM %s: an unfinished suspend was abandoned; it runs on", vm.record.vm_id)

    async def shutdown(self) -> None:
        """Close connections only: the VMs (and the egress policy) stay without the agent."""
        for vm in self.vms.values():
            await self._stop_warmup(vm)
            await vm.disconnect()
        for task in [*self._background, *self._golden_builds.values()]:
            task.cancel()
        for task in [*self._background, *self._golden_builds.values()]:
            with contextlib.suppress(BaseException):
                await task
        if self._accel is not None and not self._accel.done():
            self._accel.cancel()

    async def accel(self) -> str:
        assert self._accel is not None  # noqa: S101
        return await asyncio.shield(self._accel)

    async def health(self) -> dict[str, object]:
        accel = await self.accel()
        await self.isolation.checked()
        running = [vm for vm in self.vms.values() if vm.alive()]
        capacity_disk_mb, free_disk_mb = _disk_mb(self.config.data_dir)
        return {
            "arch": qemu.host_arch(),
            "kvm_available": accel == "kvm",
            "accel": accel,
            "capacity_vcpus": os.cpu_count() or 1,
            "capacity_mem_mb": _mem_total_mb(),
            "used_vcpus": sum(vm.record.vcpus for vm in running),
            "used_mem_mb": sum(vm.record.memory_mb for vm in running),
            "running_vms": len(running),
            "capacity_disk_mb": capacity_disk_mb,
            "free_disk_mb": free_disk_mb,
            **self.isolation.status(),
            "golden_snapshots": self.golden.status(),
        }

    # -- VM operations ----------------------------------------------------------------------

    def _get(self, vm_id: str) -> ManagedVM:
        try:
            return self.vms[vm_id]
        except KeyError:
            raise VMNotFoundError(f"no VM {vm_id}") from None

    async def create(self, spec: dict[str, object]) -> dict[str, object]:
        vm_id = str(spec["vm_id"])
        if not VM_ID_RE.match(vm_id):
            raise BadRequestError("vm_id must be 1-64 letters, digits, '.', '_' or '-'")
        image_name = str(spec["image"])
        if not VM_ID_RE.match(image_name):
            raise BadRequestError("image must be a plain name")
        async with self._create_lock:
            if vm_id in self.vms:
                return self.vms[vm_id].status()
            await self.isolation.require()
            image = qemu.BootImage.load(self.config.image_dir, image_name)
            vm_dir = ensure_private_dir(self.vms_dir / vm_id)
            files = qemu.VMFiles.under(vm_dir)
            uid: int | None = None
            vcpus, memory_mb = int(spec["vcpus"]), int(spec["memory_mb"])  # type: ignore[call-overload]
            disk_gib = int(spec["disk_gib"])  # type: ignore[call-overload]
            try:
                golden = await self._golden_for(image, vcpus, memory_mb, disk_gib)
                if golden is not None:
                    await asyncio.to_thread(
                        GoldenStore.clone_into, golden, files.overlay, files.state
                    )
                    await qemu.resize_overlay(files.overlay, disk_gib)
                else:
                    await qemu.create_overlay(image.rootfs, files.overlay, disk_gib)
                identity = GuestIdentity.create(vm_dir)
                uid = self.uids.claim(files.record)
                record = VMRecord(
                    vm_id=vm_id,
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                    disk_gib=disk_gib,
                    image=image_name,
                    instance_id=identity.instance_id,
                    uid=uid,
                )
                if golden is not None:
                    record.suspended, record.state_key = True, golden.state_key
                    record.adopt_instance_id = golden.instance_id
                    record.adopt_host_key = golden.host_public_key
                    record.adopt_grow = golden.disk_bytes < disk_gib * 2**30
                record.save(files.record)
            except BaseException:
                self.uids.release(uid, files.record)
                shutil.rmtree(vm_dir, ignore_errors=True)
                raise
            vm = self.vms[vm_id] = ManagedVM(record, files, self.key, identity)
            log.info("created VM %s (image %s, uid %s)", vm_id, image_name, uid)
            return vm.status()

    # -- golden snapshots ---------------------------------------------------------------------

    async def _golden_for(
        self, image: qemu.BootImage, vcpus: int, memory_mb: int, disk_gib: int
    ) -> Golden | None:
        """The usable snapshot for this shape; without one, a build starts in the background."""
        accel = await self.accel()
        shape = shape_name(image.name, vcpus, memory_mb)
        golden = self.golden.find(shape, qemu.state_key(image, accel, vcpus, memory_mb))
        if golden is not None and golden.disk_bytes <= disk_gib * 2**30:
            return golden
        if golden is None and self.config.golden_snapshots and shape not in self._golden_builds:
            task = asyncio.create_task(self._build_golden(image, vcpus, memory_mb))
            self._golden_builds[shape] = task
        return None

    async def _build_golden(self, image: qemu.BootImage, vcpus: int, memory_mb: int) -> None:
        """Boot a template guest of this shape to ready, sync it, save it, keep it."""
        shape = shape_name(image.name, vcpus, memory_mb)
        self.golden.mark(shape, "building")
        build_dir = ensure_private_dir(self.golden.root / f".build-{shape}")
        files = qemu.VMFiles.under(build_dir)
        uid: int | None = None
        vm: ManagedVM | None = None
        try:
            await qemu.create_overlay(image.rootfs, files.overlay, None)
            identity = GuestIdentity.create(build_dir)
            uid = self.uids.claim(files.record)
            record = VMRecord(
                vm_id=f"golden-{shape}", vcpus=vcpus, memory_mb=memory_mb, disk_gib=0,
                image=image.name, instance_id=identity.instance_id, uid=uid,
            )  # fmt: skip
            record.save(files.record)
            vm = ManagedVM(record, files, self.key, identity)
            await self.isolation.admit(uid)
            accel = await self.accel()
            await self._launch(vm, uid, image, accel)
            await self._until_guest_answers(vm, GOLDEN_BOOT_TIMEOUT)
            await self._settle_template(vm)
            await self._sync_guest_disks(vm)
            await vm.disconnect()
            await self._save_state(vm)
            pid = vm.pid
            with contextlib.suppress(Exception):
                await qemu.qmp_execute(files.qmp_socket, "quit", timeout=5.0)
            if pid is not None and not await qemu.wait_exit(pid, identity.instance_id, 10.0):
                await qemu.kill_qemu(pid, identity.instance_id)
            await self._cleanup_runtime(vm)
            for leftover in (
                files.record, files.pidfile, files.launch_log, files.qmp_socket,
                files.channel_socket,
            ):  # fmt: skip
                leftover.unlink(missing_ok=True)
            disk_bytes = await qemu.virtual_size(files.overlay)
            self.golden.install(
                shape, build_dir, identity.instance_id, identity.host_key,
                qemu.state_key(image, accel, vcpus, memory_mb), disk_bytes,
            )  # fmt: skip
            log.info("golden snapshot %s ready", shape)
        except BaseException as exc:
            self.golden.mark(shape, f"build failed: {exc}"[:300] + "; creates cold-boot")
            log.warning("golden snapshot %s failed: %s", shape, exc)
            if vm is not None:
                await self._kill_leftover(vm)
                await self._cleanup_runtime(vm)
            shutil.rmtree(build_dir, ignore_errors=True)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.uids.release(uid, files.record)
            if uid is not None:
                await self.isolation.forget(uid)
            self._golden_builds.pop(shape, None)

    async def _settle_template(self, vm: ManagedVM) -> None:
        """Let the template finish booting and run, once, what every clone runs first.

        Whatever is still starting when the state is saved runs again in every clone, and
        every binary a clone's first minute needs (the adoption's, an exec's profile files) is
        then in the saved page cache instead of being read from disk under TCG.
        """
        conn = await vm.guest.get()
        result = await guest.run(conn, guest.SETTLE_SCRIPT, timeout=GOLDEN_SETTLE_TIMEOUT)
        if result.exit_code != 0:
            log.info("golden template: settling exited %s", result.exit_code)
        # A clone's first exec goes over its channel: run one there (the same login shell and
        # profiles), and let the daemon start its spare shell, which every clone then has.
        await vm.channel.ping(GOLDEN_SETTLE_TIMEOUT)
        await vm.channel.exec("true", 30, guest.MAX_OUTPUT_BYTES)
        await asyncio.sleep(TEMPLATE_SPARES_DELAY)

    async def _until_guest_answers(self, vm: ManagedVM, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not vm.alive():
                raise QemuError("the template guest's QEMU exited")
            port = vm.record.ssh_port
            if port is not None and await wait_for_banner(port):
                with contextlib.suppress(AgentError):
                    await vm.guest.get()
                    return
            await asyncio.sleep(WARMUP_INTERVAL)
        raise QemuError(f"the template guest did not answer in {timeout:.0f}s")

    async def start(self, vm_id: str) -> dict[str, object]:
        vm = self._get(vm_id)
        async with vm.lock:
            if vm.alive():
                return vm.status()
            await self.isolation.require()
            await self._cleanup_runtime(vm)
            uid = self.uids.ensure(vm.record.uid, vm.files.record)
            if uid != vm.record.uid:
                vm.record.uid = uid
                vm.save()
            await self.isolation.admit(uid)
            await self._boot(vm, uid)
            self._start_warmup(vm)
            return vm.status()

    async def _boot(self, vm: ManagedVM, uid: int) -> None:
        """Restore the saved state when there is a usable one, else boot from the disk."""
        image = qemu.BootImage.load(self.config.image_dir, vm.record.image)
        accel = await self.accel()
        why_cold = self._unusable_state(vm, image, accel)
        if why_cold is None:
            started = time.monotonic()
            try:
                await self._launch(vm, uid, image, accel, state=vm.files.state)
                pid = vm.pid
                assert pid is not None  # noqa: S101
                await qemu.finish_restore(vm.files.qmp_socket, pid, vm.record.instance_id)
            except QemuError as exc:
                log.warning("VM %s: restore failed (%s), cold boot", vm.record.vm_id, exc)
                await self._kill_leftover(vm)
                await self._cleanup_runtime(vm)
                why_cold = f"the saved state could not be restored: {exc}"[:300]
            else:
                self._discard_state(vm)
                vm.guest.clock_sync_pending = True
                self._booted(vm, "restored", "")
                log.info("restored VM %s in %.2fs", vm.record.vm_id, time.monotonic() - started)
                return
        self._discard_state(vm)
        if vm.record.adopt_instance_id:
            vm.adopted()  # a cold boot takes this VM's identity from fw_cfg at boot
            vm.expect_template_identity()
        await self._launch(vm, uid, image, accel)
        self._booted(vm, "cold", why_cold or "")

    def _unusable_state(self, vm: ManagedVM, image: qemu.BootImage, accel: str) -> str | None:
        """None when the saved state can be restored; otherwise why not (or "" for none)."""
        record = vm.record
        if record.suspending and not record.suspended:
            return "the node stopped during a suspend; booted from the disk"
        if not record.suspended:
            return ""
        if not vm.files.state.is_file():
            return "the saved state is missing; booted from the disk"
        key = qemu.state_key(image, accel, record.vcpus, record.memory_mb)
        if key != record.state_key:
            return "the saved state was made by another QEMU, machine or image; booted from disk"
        return None

    def _booted(self, vm: ManagedVM, how: str, why_cold: str) -> None:
        vm.record.last_boot, vm.record.boot_detail = how, why_cold
        vm.record.suspended = vm.record.suspending = False
        vm.record.state_key = ""
        vm.save()

    def _discard_state(self, vm: ManagedVM) -> None:
        """A running guest changes the disk: its saved state must never be restored again."""
        for path in (vm.files.state, vm.files.state_partial):
            path.unlink(missing_ok=True)

    async def _launch(
        self,
        vm: ManagedVM,
        uid: int,
        image: qemu.BootImage,
        accel: str,
        state: Path | None = None,
    ) -> None:
        tried: set[int] = set()
        for _ in range(5):
            port = self.ports.reserve(vm.record.vm_id, avoid=tried)
            tried.add(port)
            vm.record.ssh_port, vm.record.accel = port, accel
            fds = qemu.open_launch_fds(image, vm.files, vm.identity.host_key_fd(), state)
            try:
                cmd = qemu.qemu_command(
                    accel=accel,
                    image=image,
                    fds=fds,
                    vcpus=vm.record.vcpus,
                    memory_mb=vm.record.memory_mb,
                    ssh_port=port,
                    identity=vm.identity,
                    node_key=self.key,
                    restrict_network=self.config.guest_egress == "none",
                )
                pid = await qemu.launch(
                    cmd,
                    uid=uid,
                    groups=qemu.guest_groups(accel),
                    fds=fds,
                    instance_id=vm.record.instance_id,
                    qmp_socket=vm.files.qmp_socket,
                    pidfile=vm.files.pidfile,
                    output=vm.files.launch_log,
                )
            except qemu.PortInUseError:
                self.ports.release(vm.record.vm_id)
                vm.files.pidfile.unlink(missing_ok=True)
                continue
            except BaseException:
                await self._kill_leftover(vm)
                self.ports.release(vm.record.vm_id)
                raise
            finally:
                fds.close()
            vm.record.expected_running = True
            vm.save()
            log.info(
                "started VM %s (pid %s, uid %s, ssh port %s, %s)",
                vm.record.vm_id, pid, uid, port, accel,
            )  # fmt: skip
            return
        raise QemuError("could not find a free port for the SSH forward")

    async def _kill_leftover(self, vm: ManagedVM) -> None:
        pid = vm.pid
        if pid is not None:
            with contextlib.suppress(QemuError):
                await qemu.kill_qemu(pid, vm.record.instance_id)

    def _start_warmup(self, vm: ManagedVM) -> None:
        if vm.warmup is None or vm.warmup.done():
            restored = vm.record.last_boot == "restored"
            vm.channel_phase = asyncio.create_task(self._open_channel(vm, restored))
            vm.warmup = asyncio.create_task(self._warm_up(vm, vm.channel_phase))

    async def _warm_up(self, vm: ManagedVM, channel_phase: asyncio.Task[None]) -> None:
        """Reach the guest as soon as it answers, so ``ssh_ready`` flips early.

        Its channel first (``_open_channel``): a restored guest answers on it at once, and
        takes its identity or the time there. Then SSH, for terminals and files: for a restored
        guest a moment later (``SSH_AFTER_CHANNEL``), or at once if its channel failed (SSH
        then gives the identity); for a cold boot as soon as sshd shows its banner (a restored
        guest's sshd is listening already: probing would only start a connection process,
        slow under TCG, that nobody uses).
        """
        restored = vm.record.last_boot == "restored"
        try:
            if restored:
                await asyncio.wait({channel_phase})
                if vm.channel.ready():
                    await asyncio.sleep(SSH_AFTER_CHANNEL)
            while vm.alive():
                if vm.guest.ready():
                    await asyncio.sleep(1.0)
                    if channel_phase.done() and not vm.channel.ready():
                        await self._recheck_channel(vm)
                    continue
                port = vm.record.ssh_port
                if port is not None and (restored or await wait_for_banner(port)):
                    try:
                        await vm.guest.get()
                    except AgentError as exc:
                        log.info("VM %s: SSH not usable yet (%s)", vm.record.vm_id, exc.code)
                        await asyncio.sleep(WARMUP_BACKOFF)
                        continue
                    log.info("VM %s: SSH ready", vm.record.vm_id)
                    continue
                await asyncio.sleep(WARMUP_INTERVAL)
        finally:
            channel_phase.cancel()
            with contextlib.suppress(BaseException):
                await channel_phase
            await vm.disconnect()

    async def _open_channel(self, vm: ManagedVM, restored: bool) -> None:
        """Wait for the guest's channel daemon; a guest restored from a golden snapshot takes
        this VM's identity through it, one resumed from its own suspend gets the time (one
        round trip each, the first thing the guest does). Without an answer the agent uses SSH
        for everything."""
        started = time.monotonic()
        record, adoption = vm.record, vm.guest.adoption
        try:
            if adoption is not None:
                await vm.channel.adopt(
                    adoption.instance_id, record.instance_id, vm.identity.host_key, self.key,
                    adoption.grow,
                )  # fmt: skip
                vm.guest.adoption = None
                adoption.done()
                log.info("VM %s: identity given after restore from a golden snapshot",
                         record.vm_id)  # fmt: skip
            elif vm.guest.clock_sync_pending:
                seen = await vm.channel.set_time()
            else:
                seen = await vm.channel.ping(
                    CHANNEL_RESTORED_TIMEOUT if restored else CHANNEL_BOOT_TIMEOUT
                )
            if adoption is None and seen != record.instance_id:
                log.warning("VM %s: the guest's channel answers as another VM", record.vm_id)
                await vm.channel.close()
                return
        except AgentError as exc:
            log.info("VM %s: no channel (%s): SSH only", record.vm_id, exc.detail)
            await vm.channel.close()
            return
        vm.guest.clock_sync_pending = False
        log.info("VM %s: channel ready in %.3fs", record.vm_id, time.monotonic() - started)

    async def _recheck_channel(self, vm: ManagedVM) -> None:
        """A channel that stopped answering (its daemon restarted, say) is used again once it
        answers as this VM."""
        with contextlib.suppress(AgentError):
            if await vm.channel.ping(CHANNEL_RETRY_TIMEOUT) != vm.record.instance_id:
                await vm.channel.close()

    async def _stop_warmup(self, vm: ManagedVM) -> None:
        for task in (vm.warmup, vm.channel_phase):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        vm.warmup = vm.channel_phase = None

    async def _cleanup_runtime(self, vm: ManagedVM) -> None:
        await self._stop_warmup(vm)
        await vm.disconnect()
        self.ports.release(vm.record.vm_id)
        for path in (vm.files.pidfile, vm.files.qmp_socket, vm.files.channel_socket):
            path.unlink(missing_ok=True)

    async def stop(self, vm_id: str, timeout: float) -> dict[str, object]:
        """Hard stop: ACPI powerdown; a suspended VM forgets its state (next start is cold)."""
        vm = self._get(vm_id)
        async with vm.lock:
            pid = vm.pid
            if vm.alive() and pid is not None:
                await self._powerdown(vm, pid, timeout)
            vm.record.expected_running = False
            vm.record.suspended = vm.record.suspending = False
            vm.record.state_key = ""
            vm.save()
            self._discard_state(vm)
            await self._cleanup_runtime(vm)
            return vm.status()

    async def suspend(self, vm_id: str) -> dict[str, object]:
        """Save the running VM's memory and device state beside its overlay and quit QEMU.

        The guest's filesystems are synced first, so the overlay alone is complete should
        the state ever be lost. A stopped VM is a no-op. On failure the VM keeps running.
        """
        vm = self._get(vm_id)
        async with vm.lock:
            pid = vm.pid
            if not vm.alive() or pid is None:
                return vm.status()
            image = qemu.BootImage.load(self.config.image_dir, vm.record.image)
            accel = vm.record.accel or await self.accel()
            started = time.monotonic()
            await self._sync_guest_disks(vm)
            await self._stop_warmup(vm)
            await vm.disconnect()
            vm.record.suspending = True
            vm.save()
            try:
                await self._save_state(vm)
            except BaseException:
                vm.files.state_partial.unlink(missing_ok=True)
                vm.record.suspending = False
                vm.save()
                self._start_warmup(vm)
                raise
            vm.record.state_key = qemu.state_key(image, accel, vm.record.vcpus, vm.record.memory_mb)
            vm.record.suspended, vm.record.expected_running = True, False
            vm.save()
            with contextlib.suppress(Exception):
                await qemu.qmp_execute(vm.files.qmp_socket, "quit", timeout=5.0)
            if not await qemu.wait_exit(pid, vm.record.instance_id, 10.0):
                await qemu.kill_qemu(pid, vm.record.instance_id)
            await self._cleanup_runtime(vm)
            log.info(
                "suspended VM %s in %.2fs (%d MiB of state)",
                vm.record.vm_id,
                time.monotonic() - started,
                vm.files.state.stat().st_size // 2**20,
            )
            return vm.status()

    async def _sync_guest_disks(self, vm: ManagedVM) -> None:
        """Flush the guest's page cache to the overlay: files survive a lost state."""
        try:
            if vm.channel.ready():
                code = (await vm.channel.exec("sync", SYNC_TIMEOUT, 4096))["exit_code"]
            else:
                code = (
                    await guest.run(await vm.guest.get(), "sync", timeout=SYNC_TIMEOUT)
                ).exit_code
        except AgentError as exc:
            raise VMNotRunningError(
                f"VM {vm.record.vm_id} cannot be suspended before its guest answers ({exc.code})"
            ) from None
        if code != 0:
            raise QemuError(f"sync in VM {vm.record.vm_id} failed ({code})")

    async def _save_state(self, vm: ManagedVM) -> None:
        """Stream the state into a partial file; only a complete, fsynced one is renamed."""
        partial = vm.files.state_partial
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            await qemu.save_state(vm.files.qmp_socket, fd)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        partial.replace(vm.files.state)

    async def _powerdown(self, vm: ManagedVM, pid: int, timeout: float) -> None:
        await self._stop_warmup(vm)
        await vm.disconnect()
        try:
            await qemu.qmp_execute(vm.files.qmp_socket, "system_powerdown")
        except Exception as exc:  # any QMP failure means: fall back to kill
            log.warning("VM %s: QMP powerdown failed (%s), killing", vm.record.vm_id, exc)
        if await qemu.wait_exit(pid, vm.record.instance_id, timeout):
            log.info("VM %s powered off", vm.record.vm_id)
            return
        log.warning("VM %s ignored powerdown for %.0fs, killing", vm.record.vm_id, timeout)
        await qemu.kill_qemu(pid, vm.record.instance_id)

    async def delete(self, vm_id: str) -> None:
        vm = self.vms.get(vm_id)
        if vm is None:
            return
        async with vm.lock:
            pid = vm.pid
            if vm.alive() and pid is not None:
                await qemu.kill_qemu(pid, vm.record.instance_id)
            await self._cleanup_runtime(vm)
            shutil.rmtree(vm.files.root, ignore_errors=True)
            self.uids.release(vm.record.uid, vm.files.record)
            await self.isolation.forget(vm.record.uid)
            self.vms.pop(vm_id, None)
            log.info("deleted VM %s", vm_id)

    async def status(self, vm_id: str) -> dict[str, object]:
        return self._get(vm_id).status()

    async def list(self) -> list[dict[str, object]]:
        return [vm.status() for vm in self.vms.values()]

    async def stats(self, vm_id: str) -> dict[str, object]:
        vm = self._running(vm_id)
        pid = vm.pid
        assert pid is not None  # noqa: S101
        try:
            current = qemu.cpu_sample(pid)
            previous = vm.cpu_sample
            if previous is None:
                await asyncio.sleep(0.2)
                previous, current = current, qemu.cpu_sample(pid)
            vm.cpu_sample = current
            return qemu.process_stats(pid, previous, current)
        except OSError:
            raise VMNotRunningError(f"VM {vm_id} is not running") from None

    def _running(self, vm_id: str) -> ManagedVM:
        vm = self._get(vm_id)
        if not vm.alive():
            raise VMNotRunningError(f"VM {vm_id} is {vm.status()['state']}")
        return vm

    async def exec(self, vm_id: str, cmd: str, timeout: float) -> dict[str, object]:
        """Run ``cmd`` in the running VM's guest: over its channel when that answers (a spare
        shell of its daemon), else SSH (``guest.GuestConnection.exec``); the same result."""
        vm = await self._after_warmup(vm_id)
        cmd = guest.exec_text(cmd)
        # A spare bash reads its command a byte at a time: long ones go inline over SSH.
        if vm.channel.ready() and len(cmd.encode()) <= guest.MAX_SPARE_COMMAND:
            return await vm.channel.exec(cmd, timeout, guest.MAX_OUTPUT_BYTES)
        return await vm.guest.exec(cmd, timeout)

    async def guest(self, vm_id: str) -> asyncssh.SSHClientConnection:
        """The verified SSH connection of a running VM (opened now if the warm-up has not).

        While the warm-up still waits for a cold-booting guest's sshd, it opens the connection:
        one of ours would be forwarded to a guest whose network is not up yet, where slirp holds
        it for seconds (up to the connect timeout), and it would hold the connection's lock, so
        the warm-up's login (the moment sshd answers) would wait behind it. (A restored guest's
        sshd already listens: we connect at once, once its channel has given it its identity.)
        """
        vm = await self._after_warmup(vm_id, ssh=True)
        return await vm.guest.get()

    async def _after_warmup(self, vm_id: str, ssh: bool = False) -> ManagedVM:
        """The running VM, once the warm-up has reached it (or given up, or the connect timeout
        passed): a restored guest's channel phase (its identity) is done, a cold-booting guest
        answers on its channel or SSH (with ``ssh``: on SSH, whose daemon may start later than
        the channel's; see ``guest``)."""
        vm = self._running(vm_id)
        deadline = time.monotonic() + guest.CONNECT_TIMEOUT
        phase = vm.channel_phase
        if vm.record.last_boot == "restored" and phase is not None and not phase.done():
            await asyncio.wait({phase}, timeout=guest.CONNECT_TIMEOUT)
            return self._running(vm_id)
        while (
            vm.record.last_boot == "cold"
            and not (vm.guest.ready() if ssh else vm.answers())
            and vm.warmup is not None
            and not vm.warmup.done()
        ):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(WARMUP_INTERVAL)
            vm = self._running(vm_id)
        return vm


async def _constant(value: str) -> str:
    return value


def _disk_mb(path: Path) -> tuple[int, int]:
    """Size and free space (for the agent's user, so without root's reserve) of ``path``'s
    filesystem, in MiB: overlays grow there."""
    usage = os.statvfs(path)
    return usage.f_blocks * usage.f_frsize // 2**20, usage.f_bavail * usage.f_frsize // 2**20


def _mem_total_mb() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0
