"""Golden snapshots without a guest: which snapshot a create may use, what a clone gets, and
what ``/health`` says when creates cold-boot. (Real clones: ``test_golden_vm.py``.)"""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncssh
import pytest

from node_agent import guest, qemu
from node_agent.config import AgentConfig
from node_agent.golden import GoldenStore, shape_name
from node_agent.vms import VMManager

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 256, "disk_gib": 2, "image": "default"}


def build_dir(store: GoldenStore, name: str = "build") -> os.PathLike[str]:
    path = store.root / name
    path.mkdir()
    (path / "overlay.qcow2").write_bytes(b"overlay")
    (path / "memory.state").write_bytes(b"state")
    return path


def test_a_snapshot_is_used_only_under_the_key_it_was_saved_with(tmp_path):
    store = GoldenStore(tmp_path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    store.install("default-1c-256m", build_dir(store), "a" * 32, key, "key-1", 2**30)

    assert store.find("default-1c-256m", "key-1") is not None
    assert store.find("default-1c-256m", "key-2") is None
    assert "cold-boot" in store.status()["default-1c-256m"]
    assert store.find("default-2c-256m", "key-1") is None


def test_a_clone_gets_its_own_overlay_copy_and_a_link_to_the_state(tmp_path):
    store = GoldenStore(tmp_path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    golden = store.install("s", build_dir(store), "a" * 32, key, "k", 2**30)
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()

    GoldenStore.clone_into(golden, vm_dir / "overlay.qcow2", vm_dir / "memory.state")
    (vm_dir / "overlay.qcow2").write_bytes(b"the clone's own writes")
    (vm_dir / "memory.state").unlink()  # what a restore does with it

    assert golden.overlay.read_bytes() == b"overlay"
    assert golden.state.read_bytes() == b"state"
    assert GoldenStore.public_key(golden).export_public_key() == key.export_public_key()


@pytest.fixture
async def manager(tmp_path, fake_image_dir, token, monkeypatch):
    config = AgentConfig(
        data_dir=tmp_path / "data",
        token=token,
        image_dir=fake_image_dir,
        accel="tcg",
        golden_snapshots=True,
    )
    vms = VMManager(config)
    builds: list[str] = []

    async def fake_build(image: qemu.BootImage, vcpus: int, memory_mb: int) -> None:
        builds.append(shape_name(image.name, vcpus, memory_mb))

    monkeypatch.setattr(vms, "_build_golden", fake_build)
    vms.builds = builds  # type: ignore[attr-defined]
    await vms.startup()
    yield vms
    await vms.shutdown()


async def test_the_first_create_of_a_shape_cold_boots_and_starts_one_build(manager):
    first = await manager.create(SPEC)
    second = await manager.create({**SPEC, "vm_id": "vm2"})
    await asyncio.sleep(0)

    assert first["suspended"] is False and second["suspended"] is False
    assert manager.builds == ["default-1c-256m"]


async def test_a_create_with_a_snapshot_starts_suspended_with_the_template_identity(manager):
    image = qemu.BootImage.load(manager.config.image_dir, "default")
    template = asyncssh.generate_private_key("ssh-ed25519")
    build = manager.golden.root / "b"
    build.mkdir()
    await qemu.create_overlay(image.rootfs, build / "overlay.qcow2", 1)
    (build / "memory.state").write_bytes(b"state")
    manager.golden.install(
        "default-1c-256m", build, "t" * 32, template,
        qemu.state_key(image, "tcg", 1, 256), 2**30,
    )  # fmt: skip

    status = await manager.create(SPEC)
    vm = manager.vms["vm1"]

    assert status["suspended"] is True and manager.builds == []
    assert vm.record.adopt_instance_id == "t" * 32 != vm.record.instance_id
    assert vm.guest.adoption is not None and vm.guest.adoption.grow is True
    assert await qemu.virtual_size(vm.files.overlay) == 2 * 2**30  # grown to the type's disk
    assert vm.files.state.stat().st_nlink == 2  # shared with the snapshot, never copied


async def test_a_snapshot_larger_than_the_type_disk_is_not_used(manager):
    image = qemu.BootImage.load(manager.config.image_dir, "default")
    build = manager.golden.root / "b"
    build.mkdir()
    (build / "overlay.qcow2").write_bytes(b"x")
    (build / "memory.state").write_bytes(b"state")
    manager.golden.install(
        "default-1c-256m", build, "t" * 32, asyncssh.generate_private_key("ssh-ed25519"),
        qemu.state_key(image, "tcg", 1, 256), 3 * 2**30,
    )  # fmt: skip

    status = await manager.create(SPEC)  # a 2 GiB type

    assert status["suspended"] is False


def test_the_settle_script_is_valid_bash():
    checked = subprocess.run(["bash", "-n"], input=guest.SETTLE_SCRIPT.encode(), check=False)

    assert checked.returncode == 0


def test_the_adoption_script_is_valid_bash_and_checks_the_template_first():
    checked = subprocess.run(["bash", "-n"], input=guest.ADOPT_SCRIPT.encode(), check=False)
    lines = guest.ADOPT_SCRIPT.splitlines()
    first_write = next(i for i, line in enumerate(lines) if ">/" in line and "read" not in line)

    assert checked.returncode == 0
    assert lines.index('[ "$seen" = "$1" ] || exit 97') < first_write
