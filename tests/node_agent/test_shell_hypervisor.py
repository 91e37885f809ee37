"""The shell hypervisor: a fake behind the agent's real process, HTTP and WebSocket API.

Driven the way the web tier drives a node: ``HttpNodeDriver`` against ``python -m node_agent
--hypervisor shell``. No QEMU, no root needed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from node_agent.app import create_app as create_qemu_app
from node_agent.config import AgentConfig
from node_agent.shell_hypervisor import create_app as create_shell_app
from tests.support.agents import AgentProcess, vm_spec
from vm_manager.drivers import GuestFileNotFound, PathNotAllowed, VMNotFound, VMNotRunning
from vm_manager.drivers.http import HttpNodeDriver


@pytest.fixture
def shell_agent(start_agent: Callable[..., AgentProcess], tmp_path: Path) -> AgentProcess:
    return start_agent(tmp_path / "no-images", extra_args=("--hypervisor", "shell"))


@pytest.fixture
async def running_vm(shell_agent: AgentProcess) -> HttpNodeDriver:
    driver = shell_agent.driver()
    await driver.vm_create(vm_spec("vm1"))  # type: ignore[arg-type]
    await driver.vm_start("vm1")
    return driver


def routes(app: object) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:  # type: ignore[attr-defined]
        for method in getattr(route, "methods", None) or {"WEBSOCKET"}:
            found.add((method, route.path))
    return found


def test_it_serves_exactly_the_qemu_agents_routes(tmp_path: Path, token: str) -> None:
    qemu = AgentConfig(data_dir=tmp_path / "q", token=token, accel="tcg")
    shell = AgentConfig(data_dir=tmp_path / "s", token=token)

    assert routes(create_shell_app(shell)) == routes(create_qemu_app(qemu))


async def test_a_vm_is_created_started_listed_stopped_and_deleted(
    shell_agent: AgentProcess,
) -> None:
    driver = shell_agent.driver()

    created = await driver.vm_create(vm_spec("vm1"))  # type: ignore[arg-type]
    started = await driver.vm_start("vm1")
    listed = await driver.vm_list()
    stopped = await driver.vm_stop("vm1")
    await driver.vm_delete("vm1")

    assert (created["state"], started["state"], stopped["state"]) == (
        "stopped",
        "running",
        "stopped",
    )
    assert started["ssh_ready"] is True
    assert [vm["vm_id"] for vm in listed] == ["vm1"]
    assert await driver.vm_list() == []
    with pytest.raises(VMNotFound):
        await driver.vm_status("vm1")


async def test_a_suspended_vm_keeps_its_files_and_starts_as_restored(
    running_vm: HttpNodeDriver,
) -> None:
    await running_vm.write_file("vm1", "/app/kept.txt", b"kept")

    suspended = await running_vm.vm_suspend("vm1")
    resumed = await running_vm.vm_start("vm1")

    assert (suspended["state"], suspended["suspended"]) == ("stopped", True)
    assert (resumed["state"], resumed["suspended"], resumed["last_boot"]) == (
        "running",
        False,
        "restored",
    )
    assert await running_vm.read_file("vm1", "/app/kept.txt") == b"kept"


async def test_health_says_it_is_the_fake(shell_agent: AgentProcess) -> None:
    health = await shell_agent.driver().health()

    assert health["accel"] == "shell"
    assert health["kvm_available"] is False
    assert health["capacity_vcpus"] >= 1000


async def test_health_claims_disk_for_hundreds_of_containers_whatever_the_hosts_disk(
    shell_agent: AgentProcess,
) -> None:
    # Its VMs' disks are numbers in their records: the host's disk must not cap the load runs.
    health = await shell_agent.driver().health()

    assert health["capacity_disk_mb"] >= 1000 * 5 * 1024
    assert health["free_disk_mb"] <= health["capacity_disk_mb"]


async def test_files_and_commands_share_the_vms_folder(running_vm: HttpNodeDriver) -> None:
    await running_vm.write_file("vm1", "/app/src/main.py", b"print('hi')\n")
    result = await running_vm.exec("vm1", "python3 src/main.py && ls src")
    entries = await running_vm.list_dir("vm1", "/app/src")

    assert result["exit_code"] == 0
    assert result["stdout"] == "hi\nmain.py\n"
    assert await running_vm.read_file("vm1", "/app/src/main.py") == b"print('hi')\n"
    assert [(e["path"], e["path_type"]) for e in entries] == [("/app/src/main.py", "file")]


async def test_file_errors_carry_the_agents_codes(running_vm: HttpNodeDriver) -> None:
    await running_vm.exec("vm1", "ln -s /etc escape")

    with pytest.raises(GuestFileNotFound):
        await running_vm.read_file("vm1", "/app/missing.txt")
    with pytest.raises(PathNotAllowed):
        await running_vm.read_file("vm1", "/app/escape/passwd")
    with pytest.raises(PathNotAllowed):
        await running_vm.read_file("vm1", "/app/../etc/passwd")
    with pytest.raises(PathNotAllowed):
        await running_vm.delete_path("vm1", "/app")


async def test_a_stopped_vm_refuses_files_and_terminals(shell_agent: AgentProcess) -> None:
    driver = shell_agent.driver()
    await driver.vm_create(vm_spec("vm1"))  # type: ignore[arg-type]

    with pytest.raises(VMNotRunning):
        await driver.read_file("vm1", "/app/a")
    with pytest.raises(VMNotRunning):
        await driver.open_terminal("vm1")


async def test_the_terminal_is_a_real_shell_on_a_pty(running_vm: HttpNodeDriver) -> None:
    await running_vm.write_file("vm1", "/app/note.txt", b"from the editor")
    terminal = await running_vm.open_terminal("vm1", cols=100, rows=30)
    try:
        await terminal.write(b"tty >/dev/null && echo TTY-$(stty size)-$(cat note.txt)\n")
        seen = b""
        async with asyncio.timeout(10):
            while b"TTY-30 100-from the editor" not in seen:
                seen += await terminal.read()
    finally:
        await terminal.close()


async def test_vms_outlive_a_killed_agent(
    start_agent: Callable[..., AgentProcess], shell_agent: AgentProcess, tmp_path: Path
) -> None:
    driver = shell_agent.driver()
    await driver.vm_create(vm_spec("vm1"))  # type: ignore[arg-type]
    await driver.vm_start("vm1")
    await driver.write_file("vm1", "/app/kept.txt", b"kept")
    shell_agent.kill(signal.SIGKILL)

    again = start_agent(
        tmp_path / "no-images", data_dir=shell_agent.data_dir, extra_args=("--hypervisor", "shell")
    ).driver()

    assert [(vm["vm_id"], vm["state"]) for vm in await again.vm_list()] == [("vm1", "running")]
    assert await again.read_file("vm1", "/app/kept.txt") == b"kept"
