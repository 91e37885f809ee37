"""Suspend and resume below the guest: QEMU's state saved through a passed descriptor, restored
with ``-incoming``, under the same sandbox and VM uid; and what a start does with a saved state.

The real-QEMU tests use the host's kernel (no guest userspace), so they take seconds; the guest
side (processes and files surviving) is in ``test_suspend_vm.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from node_agent import qemu
from node_agent.identity import GuestIdentity, ensure_private_dir
from node_agent.uids import UidPool
from node_agent.vms import VMManager, VMRecord

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 256, "disk_gib": 1, "image": "default"}


def fake_fds(state: int | None = None) -> qemu.LaunchFds:
    return qemu.LaunchFds(
        kernel=10, initrd=11, base=12, overlay=13, qmp=14, host_key=15, channel=16, state=state
    )


def command(tmp_path: Path, fds: qemu.LaunchFds) -> list[str]:
    image = qemu.BootImage("default", Path("k"), Path("i"), Path("r"), "console=ttyS0")
    (tmp_path / "vm").mkdir(exist_ok=True)
    return qemu.qemu_command(
        accel="tcg", image=image, fds=fds, vcpus=1, memory_mb=256, ssh_port=20001,
        identity=GuestIdentity.create(tmp_path / "vm"),
        node_key=asyncssh.generate_private_key("ssh-ed25519"),
    )  # fmt: skip


def test_a_restore_reads_the_state_from_an_inherited_descriptor(tmp_path):
    cmd = command(tmp_path, fake_fds(state=16))

    assert cmd[cmd.index("-incoming") + 1] == "fd:16"
    assert "16" in map(str, fake_fds(state=16).numbers())
    assert "-sandbox" in cmd and "-nodefaults" in cmd  # the same hardened launch


def test_a_cold_boot_has_no_incoming_state(tmp_path):
    assert "-incoming" not in command(tmp_path, fake_fds())


def test_the_state_key_changes_with_the_image_the_size_and_the_machine(tmp_path):
    base = tmp_path / "img"
    base.mkdir()
    for name in ("k", "i", "r"):
        (base / name).write_bytes(b"x")
    image = qemu.BootImage("default", base / "k", base / "i", base / "r", "quiet")
    key = qemu.state_key(image, "tcg", 1, 512)

    assert key == qemu.state_key(image, "tcg", 1, 512)
    assert key != qemu.state_key(image, "tcg", 1, 1024)
    assert key != qemu.state_key(image, "kvm", 1, 512)
    assert key != qemu.state_key(
        qemu.BootImage("default", base / "k", base / "i", base / "r", "other"), "tcg", 1, 512
    )
    (base / "k").write_bytes(b"a rebuilt kernel")
    assert key != qemu.state_key(image, "tcg", 1, 512)
    assert qemu.qemu_version() in key


def test_the_state_key_changes_with_the_machine_type_and_the_image_build(tmp_path, monkeypatch):
    """Golden snapshots and saved states use this key: none is restored across a change of
    machine (q35 / microvm), kernel file or image build."""
    base = tmp_path / "img"
    base.mkdir()
    for name in ("vmlinux", "vmlinuz", "i", "r"):
        (base / name).write_bytes(b"x")
    image = qemu.BootImage("default", base / "vmlinux", base / "i", base / "r", "quiet", "b1")
    key = qemu.state_key(image, "tcg", 1, 512)

    rebuilt = qemu.BootImage("default", base / "vmlinux", base / "i", base / "r", "quiet", "b2")
    assert key != qemu.state_key(rebuilt, "tcg", 1, 512)
    compressed = qemu.BootImage("default", base / "vmlinuz", base / "i", base / "r", "quiet", "b1")
    assert key != qemu.state_key(compressed, "tcg", 1, 512)
    monkeypatch.setattr(qemu, "MACHINE", "microvm")
    assert key != qemu.state_key(image, "tcg", 1, 512)


# -- real QEMU: save, quit, restore ------------------------------------------------------------


class Launched:
    def __init__(self, tmp_path: Path, image_dir: Path) -> None:
        self.image = qemu.BootImage.load(image_dir, "default")
        self.vm_dir = ensure_private_dir(tmp_path / "data" / "vms" / "vm1")
        self.files = qemu.VMFiles.under(self.vm_dir)
        self.identity = GuestIdentity.create(self.vm_dir)
        self.uid = UidPool(0x6FFF_0000, 0x6FFF_00FF, tmp_path / "claims").claim(self.files.record)
        self.node_key = asyncssh.generate_private_key("ssh-ed25519")
        self.pid: int | None = None

    async def start(self, state: Path | None = None) -> int:
        fds = qemu.open_launch_fds(self.image, self.files, self.identity.host_key_fd(), state)
        port = qemu.PortRegistry().reserve("t")
        cmd = qemu.qemu_command(
            accel="tcg", image=self.image, fds=fds, vcpus=1, memory_mb=128, ssh_port=port,
            identity=self.identity, node_key=self.node_key,
        )  # fmt: skip
        try:
            self.pid = await qemu.launch(
                cmd, uid=self.uid, groups=(), fds=fds, instance_id=self.identity.instance_id,
                qmp_socket=self.files.qmp_socket, pidfile=self.files.pidfile,
                output=self.files.launch_log,
            )  # fmt: skip
        finally:
            fds.close()
        return self.pid

    async def kill(self) -> None:
        if self.pid is not None:
            await qemu.kill_qemu(self.pid, self.identity.instance_id)


@pytest.fixture
async def launched(tmp_path, kernel_image_dir):
    vm = Launched(tmp_path, kernel_image_dir)
    await qemu.create_overlay(vm.image.rootfs, vm.files.overlay, 1)
    yield vm
    await vm.kill()


async def test_a_saved_state_restores_into_a_new_sandboxed_qemu_that_runs(launched):
    pid = await launched.start()
    fd = os.open(launched.files.state, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        await qemu.save_state(launched.files.qmp_socket, fd)
    finally:
        os.close(fd)
    paused = await qemu.qmp_execute(launched.files.qmp_socket, "query-status")
    await qemu.kill_qemu(pid, launched.identity.instance_id)

    new_pid = await launched.start(state=launched.files.state)
    await qemu.finish_restore(launched.files.qmp_socket, new_pid, launched.identity.instance_id)
    running = await qemu.qmp_execute(launched.files.qmp_socket, "query-status")

    assert isinstance(paused, dict) and paused["status"] == "postmigrate"
    assert launched.files.state.stat().st_size > 64 * 1024
    assert new_pid != pid and qemu.process_uid(new_pid) == launched.uid
    assert isinstance(running, dict) and running["status"] == "running"


async def test_an_unusable_state_is_reported_not_run(launched):
    launched.files.state.write_bytes(b"QEVM" + os.urandom(4096))

    with pytest.raises(qemu.QemuError):
        pid = await launched.start(state=launched.files.state)
        await qemu.finish_restore(launched.files.qmp_socket, pid, launched.identity.instance_id)


# -- what start and stop do with a saved state (no guest) ---------------------------------------


async def suspended_vm(manager: VMManager) -> VMRecord:
    await manager.create(SPEC)
    vm = manager.vms["vm1"]
    image = qemu.BootImage.load(manager.config.image_dir, "default")
    vm.files.state.write_bytes(b"saved")
    vm.record.suspended = True
    vm.record.state_key = qemu.state_key(image, "tcg", 1, 256)
    vm.save()
    return vm.record


async def test_a_suspended_vm_is_stopped_with_the_suspended_detail(manager):
    await suspended_vm(manager)

    status = await manager.status("vm1")

    assert status["state"] == "stopped" and status["suspended"] is True


async def test_a_hard_stop_forgets_the_saved_state(manager):
    await suspended_vm(manager)

    status = await manager.stop("vm1", timeout=1)

    assert status["suspended"] is False
    assert not manager.vms["vm1"].files.state.exists()


async def test_a_state_saved_under_another_image_or_qemu_is_not_restored(manager):
    record = await suspended_vm(manager)
    record.state_key = "another qemu"
    vm = manager.vms["vm1"]
    image = qemu.BootImage.load(manager.config.image_dir, "default")

    assert "another QEMU" in str(manager._unusable_state(vm, image, "tcg"))


async def test_a_missing_state_or_an_unfinished_suspend_means_a_cold_boot_that_says_so(manager):
    record = await suspended_vm(manager)
    vm = manager.vms["vm1"]
    image = qemu.BootImage.load(manager.config.image_dir, "default")
    usable = manager._unusable_state(vm, image, "tcg")
    vm.files.state.unlink()
    missing = manager._unusable_state(vm, image, "tcg")
    record.suspended, record.suspending = False, True
    interrupted = manager._unusable_state(vm, image, "tcg")

    assert usable is None
    assert "missing" in str(missing)
    assert "during a suspend" in str(interrupted)


async def test_suspending_a_stopped_vm_is_a_no_op(manager):
    await manager.create(SPEC)

    status = await manager.suspend("vm1")

    assert status["state"] == "stopped" and status["suspended"] is False
