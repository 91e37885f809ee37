"""The in-memory node keeps the NodeDriver semantics that everything above relies on."""

import asyncio

import pytest

from vm_manager.drivers import (
    GuestFileNotFound,
    NodeUnavailable,
    PathNotAllowed,
    VMNotFound,
    VMNotRunning,
)
from vm_manager.drivers.memory import InMemoryNodeDriver

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 1024, "disk_gib": 5, "image": "default"}


@pytest.fixture
async def running():
    driver = InMemoryNodeDriver("n1")
    await driver.vm_create(SPEC)
    await driver.vm_start("vm1")
    return driver


async def test_create_is_idempotent_and_starts_stopped():
    driver = InMemoryNodeDriver("n1")

    first = await driver.vm_create(SPEC)
    again = await driver.vm_create(SPEC)

    assert first["state"] == again["state"] == "stopped"
    assert len(await driver.vm_list()) == 1


async def test_health_counts_running_vms(running):
    health = await running.health()

    assert (health["running_vms"], health["used_vcpus"], health["used_mem_mb"]) == (1, 1, 1024)


async def test_exec_and_files_share_the_workspace(running):
    result = await running.exec("vm1", "echo hi > note.txt && echo done")

    assert result["exit_code"] == 0
    assert result["stdout"] == "done\n"
    assert await running.read_file("vm1", "/app/note.txt") == b"hi\n"


async def test_write_move_list_and_delete(running):
    await running.write_file("vm1", "/app/src/a.py", b"print(1)", 0o600)
    await running.move_path("vm1", "/app/src/a.py", "/app/b.py")

    names = {e["name"]: e for e in await running.list_dir("vm1", "/app")}
    assert names["b.py"]["mode"] == 0o600
    assert names["src"]["path_type"] == "directory"
    await running.delete_path("vm1", "/app/src")
    with pytest.raises(GuestFileNotFound):
        await running.read_file("vm1", "/app/src/a.py")


async def test_symlink_escape_is_refused(running):
    await running.exec("vm1", "ln -s /etc outside")

    with pytest.raises(PathNotAllowed):
        await running.read_file("vm1", "/app/outside/hostname")


async def test_exec_times_out(running):
    result = await running.exec("vm1", "sleep 5", timeout=0.2)

    assert result["timed_out"] is True


async def test_stopped_vm_refuses_guest_operations():
    driver = InMemoryNodeDriver("n1")
    await driver.vm_create(SPEC)

    with pytest.raises(VMNotRunning):
        await driver.exec("vm1", "true")


async def test_unknown_vm_and_unreachable_node():
    driver = InMemoryNodeDriver("n1")
    with pytest.raises(VMNotFound):
        await driver.vm_status("nope")

    InMemoryNodeDriver.set_reachable("n1", False)
    with pytest.raises(NodeUnavailable):
        await driver.health()


async def test_crashed_vm_reports_error(running):
    InMemoryNodeDriver.crash_vm("n1", "vm1")

    assert (await running.vm_status("vm1"))["state"] == "error"


async def test_delete_removes_the_vm_and_is_idempotent(running):
    await running.vm_delete("vm1")
    await running.vm_delete("vm1")

    assert await running.vm_list() == []


async def test_terminal_runs_a_real_shell(running):
    terminal = await running.open_terminal("vm1")
    try:
        await terminal.write(b"echo $((6*7))\n")
        output = b""
        while b"42" not in output:
            output += await asyncio.wait_for(terminal.read(), 5)
    finally:
        await terminal.close()

    assert b"42" in output


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
async def test_archive_streams_the_folder(running, fmt):
    await running.write_file("vm1", "/app/a.txt", b"a")

    chunks = [chunk async for chunk in running.archive("vm1", "/app", fmt)]

    assert b"".join(chunks)
