"""The node agent on real QEMU guests (TCG here), driven through ``HttpNodeDriver``.

Boots are expensive (tens of seconds each on two cores), so the module boots two VMs once and
runs every test against them; destructive tests (agent kills, stop/start, delete, a killed
QEMU) come last, in file order. Three boots in all: two concurrent, one restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node_agent.guest import INSTANCE_ID_PATH
from node_agent.qemu import VMFiles, qemu_alive, read_pid
from tests.support.agents import AgentProcess, boot, kill_vms, spawn_agent, wait_ssh_ready
from vm_manager.drivers import (
    GuestFileNotFound,
    NodeBadRequest,
    PathNotAllowed,
    VMNotFound,
    VMNotRunning,
)
from vm_manager.drivers.base import GuestFileTooLarge
from vm_manager.drivers.http import HttpNodeDriver

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

VM_A, VM_B = "vm-a", "vm-b"


@dataclass
class VMEnv:
    agent: AgentProcess
    data_dir: Path
    image_dir: Path
    token: str

    def driver(self) -> HttpNodeDriver:
        return self.agent.driver()

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.agent.kill(sig)
        self.agent = spawn_agent(self.data_dir, self.image_dir, self.token, accel="auto")

    def record(self, vm_id: str) -> dict[str, object]:
        return json.loads((self.data_dir / "vms" / vm_id / "vm.json").read_text())

    def pid(self, vm_id: str) -> int | None:
        return read_pid(self.data_dir / "vms" / vm_id / "qemu.pid")

    def alive(self, vm_id: str) -> bool:
        return qemu_alive(self.pid(vm_id), str(self.record(vm_id)["instance_id"]))


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, guest_image_dir: Path, token: str
) -> Iterator[VMEnv]:
    root = tmp_path_factory.mktemp("vm-agent")
    data_dir = root / "data"
    agent = spawn_agent(data_dir, guest_image_dir, token, accel="auto")  # exercises the probe
    vm_env = VMEnv(agent=agent, data_dir=data_dir, image_dir=guest_image_dir, token=token)
    try:
        yield vm_env
    finally:
        vm_env.agent.kill(signal.SIGTERM)
        kill_vms(data_dir)


@pytest.fixture(scope="module")
def two_vms(env: VMEnv) -> tuple[str, str]:
    async def boot_both() -> None:
        driver = env.driver()
        await asyncio.gather(boot(driver, VM_A), boot(driver, VM_B))

    started = time.monotonic()
    asyncio.run(boot_both())
    print(f"\ntwo concurrent boots to SSH-ready: {time.monotonic() - started:.1f}s")  # noqa: T201
    return VM_A, VM_B


async def test_concurrent_vms_get_their_own_port_and_exec_lands_in_the_right_vm(env, two_vms):
    driver = env.driver()
    records = {vm: env.record(vm) for vm in two_vms}

    assert records[VM_A]["ssh_port"] != records[VM_B]["ssh_port"]
    for vm in two_vms:
        result = await driver.exec(vm, 'echo "$(cat /run/pequeroku/instance_id)"; uname -a')
        instance_id, uname = result["stdout"].splitlines()[:2]
        assert result["exit_code"] == 0, result
        assert instance_id == records[vm]["instance_id"]
        assert uname.startswith("Linux")


async def test_a_file_written_by_exec_is_read_through_the_files_api(env, two_vms):
    driver = env.driver()

    result = await driver.exec(VM_A, "pwd && echo hello > made-by-exec.txt")

    assert result["stdout"].strip() == "/app"
    assert await driver.read_file(VM_A, "/app/made-by-exec.txt") == b"hello\n"


async def test_file_operations_round_trip(env, two_vms):
    driver = env.driver()

    await driver.write_file(VM_A, "/app/src/main.sh", b"echo hi\n", mode=0o755)
    listed = await driver.list_dir(VM_A, "/app/src")
    await driver.make_dir(VM_A, "/app/empty/inner")
    await driver.move_path(VM_A, "/app/src/main.sh", "/app/src/run.sh")
    ran = await driver.exec(VM_A, "./src/run.sh")

    assert [(e["name"], e["path_type"], e["size"], e["mode"]) for e in listed] == [
        ("main.sh", "file", 8, 0o755)
    ]
    assert listed[0]["path"] == "/app/src/main.sh"
    assert ran["stdout"] == "hi\n"
    assert "empty" in {e["name"] for e in await driver.list_dir(VM_A, "/app")}
    await driver.delete_path(VM_A, "/app/src")
    with pytest.raises(GuestFileNotFound):
        await driver.read_file(VM_A, "/app/src/run.sh")


async def test_reads_are_bounded_listings_capped_and_downloads_streamed_by_the_agent(env, two_vms):
    driver = env.driver()
    await driver.exec(VM_A, "mkdir -p many && for i in $(seq 1 30); do : > many/f$i; done")
    await driver.write_file(VM_A, "/app/ten.bin", b"0123456789")
    await driver.exec(VM_A, "head -c 3000000 /dev/zero > big.bin")

    assert await driver.read_file(VM_A, "/app/ten.bin", max_bytes=10) == b"0123456789"
    with pytest.raises(GuestFileTooLarge):
        await driver.read_file(VM_A, "/app/ten.bin", max_bytes=9)
    assert len(await driver.list_dir(VM_A, "/app/many", limit=7)) == 7
    assert len(await driver.list_dir(VM_A, "/app/many")) == 30
    chunks = [chunk async for chunk in driver.read_file_stream(VM_A, "/app/big.bin")]
    assert sum(map(len, chunks)) == 3_000_000 and len(chunks) > 1
    with pytest.raises(GuestFileNotFound):
        [chunk async for chunk in driver.read_file_stream(VM_A, "/app/missing")]
    await driver.exec(VM_A, "rm -rf many big.bin ten.bin")


async def test_archives_hold_the_workspace(env, two_vms):
    driver = env.driver()
    await driver.write_file(VM_A, "/app/pkg/data.txt", b"payload")

    zipped = b"".join([chunk async for chunk in driver.archive(VM_A, "/app", "zip")])
    tarred = b"".join([chunk async for chunk in driver.archive(VM_A, "/app", "tar.gz")])

    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        assert archive.read("pkg/data.txt") == b"payload"
    with tarfile.open(fileobj=io.BytesIO(tarred), mode="r:gz") as archive:
        assert "./pkg/data.txt" in archive.getnames()


async def test_a_sparse_file_stays_small_in_a_tar_gz_and_a_zip_of_it_is_refused(env, two_vms):
    driver = env.driver()
    await driver.exec(VM_A, "mkdir -p /app/big && truncate -s 4G /app/big/sparse.img")
    try:
        tarred = b"".join([chunk async for chunk in driver.archive(VM_A, "/app/big", "tar.gz")])
        with pytest.raises(NodeBadRequest, match="more than the 1024 MiB"):
            async for _ in driver.archive(VM_A, "/app/big", "zip"):
                pass
    finally:
        await driver.exec(VM_A, "rm -rf /app/big")

    assert len(tarred) < 64 * 1024
    with tarfile.open(fileobj=io.BytesIO(tarred), mode="r:gz") as archive:
        assert archive.getmember("./sparse.img").size == 4 * 1024**3


async def test_exec_output_is_bounded_and_timeouts_are_reported(env, two_vms):
    driver = env.driver()

    big = await driver.exec(VM_B, "head -c 2000000 /dev/zero | tr '\\0' a")
    slow = await driver.exec(VM_B, "sleep 20", timeout=2)

    assert big["exit_code"] == 0 and len(big["stdout"]) == 256 * 1024
    assert slow["timed_out"] is True


async def test_terminal_sessions_run_a_shell_in_app_and_resize(env, two_vms):
    driver = env.driver()
    first = await driver.open_terminal(VM_A, cols=100, rows=30)
    second = await driver.open_terminal(VM_A, cols=80, rows=24)
    try:
        await first.write(b"stty size; pwd; echo mark-$((6*7))\n")
        seen = await read_until(first, b"mark-42")
        await first.resize(120, 40)
        await first.write(b"stty size; echo mark-$((7*7))\n")
        resized = await read_until(first, b"mark-49")
        await second.write(b"echo other-$((2*2))\n")
        other = await read_until(second, b"other-4")
    finally:
        await first.close()
        await second.close()

    assert b"30 100" in seen and b"/app" in seen
    assert b"40 120" in resized
    assert b"other-4" in other


async def read_until(terminal: object, marker: bytes, timeout: float = 60.0) -> bytes:
    buffer = b""
    async with asyncio.timeout(timeout):
        while marker not in buffer:
            chunk = await terminal.read()  # type: ignore[attr-defined]
            assert chunk, f"terminal closed before {marker!r}: {buffer[-300:]!r}"
            buffer += chunk
    return buffer


async def test_symlinks_out_of_app_are_refused_and_nothing_is_written(env, two_vms):
    driver = env.driver()
    await driver.exec(VM_A, "ln -sfn /etc /app/etc && rm -f /etc/pequeroku-pwned")
    try:
        with pytest.raises(PathNotAllowed):
            await driver.read_file(VM_A, "/app/etc/passwd")
        with pytest.raises(PathNotAllowed):
            await driver.write_file(VM_A, "/app/etc/pequeroku-pwned", b"owned")
        with pytest.raises(PathNotAllowed):
            await driver.list_dir(VM_A, "/app/etc")
        check = await driver.exec(VM_A, "test -e /etc/pequeroku-pwned && echo yes || echo no")
    finally:
        await driver.exec(VM_A, "rm -f /app/etc")

    assert check["stdout"].strip() == "no"


async def test_stats_and_health_count_the_running_vms(env, two_vms):
    driver = env.driver()

    stats = await driver.vm_stats(VM_A)
    health = await driver.health()

    assert stats["rss_bytes"] > 32 * 1024 * 1024 and stats["num_threads"] >= 1
    assert health["running_vms"] == 2 and health["used_mem_mb"] == 1024
    assert health["accel"] in ("kvm", "tcg")


async def test_a_broken_ssh_connection_is_reopened(env, two_vms):
    driver = env.driver()

    with contextlib.suppress(VMNotRunning):  # the command kills its own session
        await driver.exec(VM_B, "pkill -KILL -f 'sshd: root'", timeout=5)

    deadline = time.monotonic() + 20
    while True:
        try:
            result = await driver.exec(VM_B, "echo back")
            break
        except VMNotRunning:
            assert time.monotonic() < deadline, "the agent did not reconnect"
            await asyncio.sleep(0.5)
    assert result["stdout"] == "back\n"


async def test_a_killed_agent_leaves_vms_running_and_a_new_agent_adopts_them(env, two_vms):
    pids = {vm: env.pid(vm) for vm in two_vms}

    env.agent.kill(signal.SIGKILL)

    assert all(env.alive(vm) for vm in two_vms)
    env.restart()
    driver = env.driver()
    for vm in two_vms:
        await wait_ssh_ready(driver, vm, timeout=60)
        assert env.pid(vm) == pids[vm]
        assert (await driver.exec(vm, "echo still-here"))["stdout"] == "still-here\n"


async def test_a_guest_answering_for_another_vm_over_ssh_is_refused(env, two_vms):
    record_path = env.data_dir / "vms" / VM_A / "vm.json"
    original = record_path.read_text()
    forged = {**json.loads(original), "ssh_port": env.record(VM_B)["ssh_port"]}
    env.agent.kill(signal.SIGKILL)
    record_path.write_text(json.dumps(forged))
    try:
        env.restart()
        driver = env.driver()
        # SSH goes to the forged port, where VM B answers: refused.
        with pytest.raises(VMNotRunning):
            await driver.write_file(VM_A, "/app/should-not-land", b"x")
        # The channel is VM A's own QEMU's: exec still lands in VM A.
        seen = await driver.exec(VM_A, f"cat {INSTANCE_ID_PATH}")
        assert seen["stdout"].strip() == json.loads(original)["instance_id"]
        assert (await driver.exec(VM_B, "echo b"))["stdout"] == "b\n"
        assert "identity mismatch" in env.agent.log()
    finally:
        env.agent.kill(signal.SIGKILL)
        record_path.write_text(original)
        env.restart()
    await wait_ssh_ready(env.driver(), VM_A, timeout=60)


async def test_stop_and_start_keep_the_disk_and_delete_leaves_nothing(env, two_vms):
    driver = env.driver()
    await driver.write_file(VM_A, "/app/keep.txt", b"kept")

    stopped = await driver.vm_stop(VM_A, timeout=90)
    again = await driver.vm_stop(VM_A)

    assert stopped["state"] == again["state"] == "stopped"
    assert not env.alive(VM_A)
    assert "VM vm-a powered off" in env.agent.log()
    with pytest.raises(VMNotRunning):
        await driver.exec(VM_A, "true")

    await driver.vm_start(VM_A)
    await wait_ssh_ready(driver, VM_A)
    assert await driver.read_file(VM_A, "/app/keep.txt") == b"kept"
    assert await driver.read_file(VM_A, "/app/made-by-exec.txt") == b"hello\n"

    vm_dir = env.data_dir / "vms" / VM_A
    pid, instance_id = env.pid(VM_A), str(env.record(VM_A)["instance_id"])
    qmp_socket = VMFiles.under(vm_dir).qmp_socket
    await driver.vm_delete(VM_A)

    assert not qemu_alive(pid, instance_id)
    assert not vm_dir.exists() and not qmp_socket.exists()
    with pytest.raises(VMNotFound):
        await driver.vm_status(VM_A)


async def test_a_vm_whose_qemu_died_is_not_reported_running(env, two_vms):
    driver = env.driver()
    pid = env.pid(VM_B)
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while env.alive(VM_B) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)

    status = await driver.vm_status(VM_B)
    assert status["state"] in ("stopped", "error") and not status["ssh_ready"]
    with pytest.raises(VMNotRunning):
        await driver.exec(VM_B, "true")
    assert (await driver.health())["running_vms"] == 0
    await driver.vm_delete(VM_B)
    assert await driver.vm_list() == []
