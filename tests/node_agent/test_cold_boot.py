"""A cold-booting VM: calls that need its guest wait for the warm-up's connection instead of
opening one of their own into a guest whose network is not up yet (which slirp holds until the
connect timeout, holding the connection's lock: 20 s added to every cold boot's first exec)."""

from __future__ import annotations

import asyncio

from node_agent.vms import VMManager

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 256, "disk_gib": 1, "image": "default"}


async def booting(manager: VMManager, last_boot: str) -> tuple[list[bool], list[bool]]:
    """vm1 "running" with a warm-up that finds sshd after 0.3 s; what ``get`` saw, when."""
    await manager.create(SPEC)
    vm = manager.vms["vm1"]
    vm.record.last_boot = last_boot
    ready, seen = [False], []
    vm.alive = lambda: True  # type: ignore[method-assign]
    vm.guest.ready = lambda: ready[0]  # type: ignore[method-assign]

    async def get() -> str:
        seen.append(ready[0])
        return "connection"

    async def warm_up() -> None:
        await asyncio.sleep(0.3)
        ready[0] = True
        await asyncio.sleep(3600)

    vm.guest.get = get  # type: ignore[method-assign]
    vm.warmup = asyncio.create_task(warm_up())
    return ready, seen


async def test_a_call_during_a_cold_boot_waits_for_the_warm_ups_connection(manager):
    _, seen = await booting(manager, "cold")
    try:
        assert await manager.guest("vm1") == "connection"
        assert seen == [True]  # no connection of its own while the guest was booting
    finally:
        manager.vms["vm1"].warmup.cancel()


async def test_a_call_to_a_restored_guest_connects_at_once(manager):
    _, seen = await booting(manager, "restored")
    try:
        assert await manager.guest("vm1") == "connection"
        assert seen == [False]  # its sshd already listens: the lock orders it after the warm-up
    finally:
        manager.vms["vm1"].warmup.cancel()


async def test_an_exec_during_a_cold_boot_waits_for_the_warm_ups_connection(manager):
    ready, _ = await booting(manager, "cold")
    vm = manager.vms["vm1"]
    execs: list[bool] = []

    async def exec_(cmd: str, timeout: float) -> dict[str, object]:
        execs.append(ready[0])
        return {"exit_code": 0}

    vm.guest.exec = exec_  # type: ignore[method-assign]
    try:
        assert await manager.exec("vm1", "true", 5) == {"exit_code": 0}
        assert execs == [True]
    finally:
        vm.warmup.cancel()
