"""Create = restore a golden snapshot, on real guests through ``HttpNodeDriver``.

One template boot (the agent builds the snapshot in the background after the first create of
a shape), then two containers restored from it: each must come up as itself, sharing no key,
id or random state with the other.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from tests.support.agents import AgentProcess, kill_vms, spawn_agent, vm_spec
from vm_manager.drivers.http import HttpNodeDriver

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

SHAPE = "default-1c-512m"
GUEST_FACTS = (
    "for f in /etc/ssh/ssh_host_ed25519_key.pub /run/pequeroku/instance_id /etc/machine-id "
    "/proc/sys/kernel/random/boot_id; do tr -d '\\n' < $f; echo; done; "
    "head -c 16 /dev/urandom | od -An -tx1"
)


@dataclass
class Clones:
    agent: AgentProcess
    data_dir: Path
    image_dir: Path
    token: str
    starts: dict[str, dict[str, object]]
    ready_after: dict[str, float]


async def wait_golden(driver: HttpNodeDriver, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await driver.health()).get("golden_snapshots", {})  # type: ignore[union-attr]
        if status.get(SHAPE) == "ready":
            return
        assert "failed" not in str(status.get(SHAPE, "")), status
        await asyncio.sleep(2)
    raise AssertionError(f"no golden snapshot after {timeout:.0f}s")


async def create_and_start(driver: HttpNodeDriver, vm_id: str) -> tuple[dict[str, object], float]:
    started = time.monotonic()
    await driver.vm_create(vm_spec(vm_id))  # type: ignore[arg-type]
    status = await driver.vm_start(vm_id)
    result = await driver.exec(vm_id, "true")
    assert result["exit_code"] == 0, result
    return dict(status), time.monotonic() - started


@pytest.fixture(scope="module")
def clones(
    tmp_path_factory: pytest.TempPathFactory, guest_image_dir: Path, token: str
) -> Iterator[Clones]:
    data_dir = tmp_path_factory.mktemp("golden") / "data"
    agent = spawn_agent(data_dir, guest_image_dir, token, accel="tcg", golden=True)
    env = Clones(agent, data_dir, guest_image_dir, token, {}, {})

    async def prepare() -> None:
        driver = agent.driver()
        await driver.vm_create(vm_spec("first"))  # type: ignore[arg-type]
        await wait_golden(driver)
        await driver.vm_delete("first")
        for vm_id in ("c1", "c2"):
            env.starts[vm_id], env.ready_after[vm_id] = await create_and_start(driver, vm_id)

    try:
        asyncio.run(prepare())
        print(f"\ncreate -> ready from the golden snapshot: {env.ready_after}")  # noqa: T201
        yield env
    finally:
        env.agent.kill(signal.SIGTERM)
        kill_vms(data_dir)


async def facts(driver: HttpNodeDriver, vm_id: str) -> list[str]:
    result = await driver.exec(vm_id, GUEST_FACTS)
    assert result["exit_code"] == 0, result
    return result["stdout"].strip().splitlines()


def pinned_key(clones: Clones, vm_id: str) -> str:
    key = asyncssh.read_private_key(str(clones.data_dir / "vms" / vm_id / "ssh_host_ed25519_key"))
    return " ".join(key.export_public_key().decode().split()[:2])


async def test_containers_created_from_the_snapshot_are_restored_not_booted(clones):
    for vm_id in ("c1", "c2"):
        assert clones.starts[vm_id]["last_boot"] == "restored", clones.starts[vm_id]
        assert clones.ready_after[vm_id] < 30  # a cold boot takes about a minute here


async def test_two_containers_from_one_snapshot_share_no_key_id_or_random_state(clones):
    driver = clones.agent.driver()
    one, two = await facts(driver, "c1"), await facts(driver, "c2")
    assert len(one) == len(two) == 5, (one, two)

    for index, what in enumerate(("host key", "instance id", "machine-id", "boot_id", "random")):
        assert one[index] != two[index], what
    assert " ".join(one[0].split()[:2]) == pinned_key(clones, "c1")
    assert " ".join(two[0].split()[:2]) == pinned_key(clones, "c2")


async def test_a_fresh_connection_finds_each_clone_under_its_own_pinned_identity(clones):
    clones.agent.kill(signal.SIGTERM)  # a new agent opens new connections: pin and id check
    clones.agent = spawn_agent(
        clones.data_dir, clones.image_dir, clones.token, accel="tcg", golden=True
    )
    driver = clones.agent.driver()

    for vm_id in ("c1", "c2"):
        result = await driver.exec(vm_id, "cat /run/pequeroku/instance_id")
        status = await driver.vm_status(vm_id)
        assert result["exit_code"] == 0 and status["state"] == "running"
