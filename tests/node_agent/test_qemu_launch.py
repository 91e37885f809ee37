"""QEMU's command line and launch: sandboxed, no defaults, never root, a bounded serial console.

``test_qemu_really_runs_...`` starts a real QEMU (the host's kernel, no guest image: it never
reaches userspace) the way the agent does, and looks at the live process.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import asyncssh
import pytest

from node_agent import qemu
from node_agent.identity import GuestIdentity, ensure_private_dir
from node_agent.uids import UidPool


def fake_fds() -> qemu.LaunchFds:
    return qemu.LaunchFds(
        kernel=10, initrd=11, base=12, overlay=13, qmp=14, host_key=15, channel=16
    )


def command(tmp_path: Path, *, restrict: bool = False) -> list[str]:
    image = qemu.BootImage("default", Path("k"), Path("i"), Path("r"), "console=ttyS0")
    (tmp_path / "vm").mkdir(exist_ok=True)
    return qemu.qemu_command(
        accel="tcg",
        image=image,
        fds=fake_fds(),
        vcpus=2,
        memory_mb=512,
        ssh_port=20001,
        identity=GuestIdentity.create(tmp_path / "vm"),
        node_key=asyncssh.generate_private_key("ssh-ed25519"),
        restrict_network=restrict,
    )


def option(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == flag]


def test_the_command_line_is_sandboxed_with_no_default_devices(tmp_path):
    cmd = command(tmp_path)

    assert "-nodefaults" in cmd and "-no-user-config" in cmd
    assert option(cmd, "-sandbox") == [
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    ]
    assert "-daemonize" not in cmd  # it forks after the sandbox is on: spawn=deny kills it
    assert "-runas" not in cmd  # QEMU never starts as root at all
    devices = sorted(option(cmd, "-device"))
    assert devices[:5] == [
        "virtio-blk-pci,drive=disk",
        "virtio-net-pci,netdev=n0",
        "virtio-rng-pci",
        "virtio-serial-pci,id=vser0",
        "virtserialport,bus=vser0.0,chardev=channel,name=org.pequeroku.channel",
    ]
    assert len(devices) == 6 and devices[5].startswith("vmgenid,guid=")


def test_the_serial_console_is_a_bounded_ring_buffer_not_a_file(tmp_path):
    cmd = command(tmp_path)

    assert "ringbuf,id=serial0,size=262144" in option(cmd, "-chardev")
    assert option(cmd, "-serial") == ["chardev:serial0"]
    assert not any("file:" in arg or "serial.log" in arg for arg in cmd)


def test_qemu_opens_no_path_of_the_agents(tmp_path):
    cmd = command(tmp_path)

    assert option(cmd, "-kernel") == ["/proc/self/fd/10"]
    assert option(cmd, "-initrd") == ["/proc/self/fd/11"]
    assert option(cmd, "-add-fd") == ["fd=12,set=1,opaque=base", "fd=13,set=2,opaque=overlay"]
    assert "socket,id=qmp,fd=14,server=on,wait=off" in option(cmd, "-chardev")
    assert "socket,id=channel,fd=16,server=on,wait=off" in option(cmd, "-chardev")
    assert not any(str(tmp_path) in arg for arg in cmd)


def test_ssh_is_forwarded_on_loopback_and_egress_none_restricts_slirp(tmp_path):
    open_cmd, closed_cmd = command(tmp_path), command(tmp_path, restrict=True)

    assert option(open_cmd, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:20001-:22"]
    assert option(closed_cmd, "-netdev") == [
        "user,id=n0,hostfwd=tcp:127.0.0.1:20001-:22,restrict=on"
    ]


def test_a_kernel_others_cannot_read_is_refused_with_a_clear_error(tmp_path):
    image_dir = tmp_path / "images" / "default"
    image_dir.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "rootfs.qcow2", "cmdline"):
        (image_dir / name).write_text("x")
    (image_dir / "vmlinuz").chmod(0o600)
    image = qemu.BootImage.load(tmp_path / "images", "default")
    files = qemu.VMFiles.under(ensure_private_dir(tmp_path / "vm"))

    with pytest.raises(qemu.QemuError, match="readable by all"):
        qemu.open_launch_fds(image, files, os.memfd_create("k"))


async def test_qemu_really_runs_unprivileged_sandboxed_with_private_files(
    tmp_path, kernel_image_dir
):
    image = qemu.BootImage.load(kernel_image_dir, "default")
    vm_dir = ensure_private_dir(tmp_path / "data" / "vms" / "vm1")
    files = qemu.VMFiles.under(vm_dir)
    await qemu.create_overlay(image.rootfs, files.overlay, 1)
    identity = GuestIdentity.create(vm_dir)
    uid = UidPool(0x6FFF_0000, 0x6FFF_00FF, tmp_path / "claims").claim(files.record)
    fds = qemu.open_launch_fds(image, files, identity.host_key_fd())
    port = qemu.PortRegistry().reserve("t")
    node_key = asyncssh.generate_private_key("ssh-ed25519")
    cmd = qemu.qemu_command(
        accel="tcg", image=image, fds=fds, vcpus=1, memory_mb=128, ssh_port=port,
        identity=identity, node_key=node_key,
    )  # fmt: skip
    try:
        pid = await qemu.launch(
            cmd, uid=uid, groups=(), fds=fds, instance_id=identity.instance_id,
            qmp_socket=files.qmp_socket, pidfile=files.pidfile, output=files.launch_log,
        )  # fmt: skip
    finally:
        fds.close()
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        seccomp = next(line for line in status.splitlines() if line.startswith("Seccomp:"))
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        answer = await qemu.qmp_execute(files.qmp_socket, "query-status")
        ring = await qemu.qmp_execute(
            files.qmp_socket, "ringbuf-read", {"device": "serial0", "size": 1 << 20}
        )

        assert set(uids) == {str(uid)} and uid not in (0, os.geteuid())
        assert seccomp.split()[1] == "2"  # filter mode: -sandbox is in force
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid != os.getpid()  # not our child: it outlives the agent
        assert b"NODE_AGENT_TOKEN" not in environ
        assert isinstance(answer, dict) and answer["status"] in ("running", "paused")
        assert isinstance(ring, str) and len(ring) <= qemu.SERIAL_RING_BYTES
        assert qemu.read_pid(files.pidfile) == pid and qemu.qemu_alive(pid, identity.instance_id)
        for path in vm_dir.iterdir():
            assert path.stat().st_uid == 0, path  # the VM's uid owns nothing of the agent's
        assert stat.S_IMODE(vm_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(files.overlay.stat().st_mode) == 0o600
    finally:
        await qemu.kill_qemu(pid, identity.instance_id)


def test_the_machine_kind_picks_the_virtio_bus_in_one_place(tmp_path, monkeypatch):
    assert option(command(tmp_path), "-M") == ["q35"]
    monkeypatch.setattr(qemu, "MACHINE", "microvm")
    cmd = command(tmp_path)

    # Under TCG a microvm without the PIT hangs calibrating its clock; ACPI keeps the graceful
    # stop (system_powerdown) working.
    assert option(cmd, "-M") == ["microvm,acpi=on,pit=on,pic=on,rtc=on"]
    devices = sorted(option(cmd, "-device"))
    assert devices[:3] == [
        "virtio-blk-device,drive=disk",
        "virtio-net-device,netdev=n0",
        "virtio-rng-device",
    ]
    assert qemu.virtio_device("serial") == "virtio-serial-device"


def test_an_image_boots_its_uncompressed_kernel_when_it_has_one(tmp_path):
    image_dir = tmp_path / "images" / "default"
    image_dir.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "rootfs.qcow2", "cmdline"):
        (image_dir / name).write_text("x")

    assert qemu.BootImage.load(tmp_path / "images", "default").kernel.name == "vmlinuz"
    (image_dir / "vmlinux").write_text("x")
    (image_dir / "manifest.json").write_text('{"build_key": "abc"}')
    image = qemu.BootImage.load(tmp_path / "images", "default")
    assert image.kernel.name == "vmlinux" and image.build_key == "abc"
    (image_dir / "vmlinux").unlink()
    (image_dir / "vmlinuz").unlink()
    with pytest.raises(qemu.ImageNotFoundError, match="missing vmlinux"):
        qemu.BootImage.load(tmp_path / "images", "default")
