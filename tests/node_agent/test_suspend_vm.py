"""Suspend and resume on a real guest, through ``HttpNodeDriver``: one cold boot shared by the
module, then a suspend/resume (processes and files back) and a suspend whose state is lost
(a cold boot from the synced disk, files intact, the status saying why)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.qemu import qemu_alive, read_pid
from tests.support.agents import AgentProcess, boot, kill_vms, spawn_agent, wait_ssh_ready
from vm_manager.drivers.http import HttpNodeDriver

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

VM = "vm-s"


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, guest_image_dir: Path, token: str
) -> Iterator[AgentProcess]:
    data_dir = tmp_path_factory.mktemp("suspend") / "data"
    process = spawn_agent(data_dir, guest_image_dir, token, accel="tcg")
    try:
        asyncio.run(boot(process.driver(), VM))
        yield process
    finally:
        process.kill(signal.SIGTERM)
        kill_vms(data_dir)


def vm_dir(agent: AgentProcess) -> Path:
    return agent.data_dir / "vms" / VM


def instance_id(agent: AgentProcess) -> str:
    return str(json.loads((vm_dir(agent) / "vm.json").read_text())["instance_id"])


async def start_background_sleeper(driver: HttpNodeDriver) -> str:
    result = await driver.exec(VM, "setsid nohup sleep 100000 >/dev/null 2>&1 & echo $!")
    return result["stdout"].strip()


async def test_a_file_and_a_running_process_survive_suspend_and_resume(agent):
    driver = agent.driver()
    await driver.write_file(VM, "/app/kept.txt", b"written before the suspend\n")
    sleeper = await start_background_sleeper(driver)
    pid_before = read_pid(vm_dir(agent) / "qemu.pid")
    assert qemu_alive(pid_before, instance_id(agent))

    suspended = await driver.vm_suspend(VM)
    qemu_gone = not qemu_alive(pid_before, instance_id(agent))
    state_saved = (vm_dir(agent) / "memory.state").is_file()
    resumed = await driver.vm_start(VM)
    check = await driver.exec(VM, f"kill -0 {sleeper} && cat /app/kept.txt && date +%s")

    assert suspended["state"] == "stopped" and suspended["suspended"] is True
    assert qemu_gone and state_saved
    assert resumed["state"] == "running" and resumed["last_boot"] == "restored"
    assert check["exit_code"] == 0, check
    assert check["stdout"].startswith("written before the suspend\n")
    assert abs(int(check["stdout"].split()[-1]) - time.time()) < 30  # the clock was set
    assert not (vm_dir(agent) / "memory.state").exists()  # used once, then discarded


async def test_a_suspended_vm_whose_state_is_deleted_cold_boots_with_its_files(agent):
    driver = agent.driver()
    await driver.write_file(VM, "/app/durable.txt", b"synced before the suspend\n")
    sleeper = await start_background_sleeper(driver)
    await driver.vm_suspend(VM)
    (vm_dir(agent) / "memory.state").unlink()

    started = await driver.vm_start(VM)
    await wait_ssh_ready(driver, VM)
    content = await driver.read_file(VM, "/app/durable.txt")
    alive = await driver.exec(VM, f"kill -0 {sleeper}")

    assert started["last_boot"] == "cold" and "missing" in started["boot_detail"]
    assert content == b"synced before the suspend\n"
    assert alive["exit_code"] != 0  # a cold boot: the process is gone, the file is not
