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


async def restored_with_channel(manager: VMManager, answers: bool) -> list[tuple[str, bool]]:
    """vm1 just restored; its channel phase (identity, clock) takes 0.3 s and ends with the
    channel answering or not. Which way exec went, and whether the phase was over then."""
    await manager.create(SPEC)
    vm = manager.vms["vm1"]
    vm.record.last_boot = "restored"
    vm.alive = lambda: True  # type: ignore[method-assign]
    ready, calls = [False], []
    vm.channel.ready = lambda: ready[0]  # type: ignore[method-assign]

    async def phase() -> None:
        await asyncio.sleep(0.3)
        ready[0] = answers

    async def over_channel(cmd: str, timeout: float, limit: int) -> dict[str, object]:
        calls.append(("channel", vm.channel_phase.done()))
        return {"exit_code": 0}

    async def over_ssh(cmd: str, timeout: float) -> dict[str, object]:
        calls.append(("ssh", vm.channel_phase.done()))
        return {"exit_code": 0}

    vm.channel.exec = over_channel  # type: ignore[method-assign]
    vm.guest.exec = over_ssh  # type: ignore[method-assign]
    vm.channel_phase = asyncio.create_task(phase())
    assert await manager.exec("vm1", "true", 5) == {"exit_code": 0}
    return calls


async def test_an_exec_on_a_restored_guest_waits_for_its_identity_then_takes_the_channel(manager):
    assert await restored_with_channel(manager, answers=True) == [("channel", True)]


async def test_a_restored_guest_whose_channel_does_not_answer_is_reached_over_ssh(manager):
    assert await restored_with_channel(manager, answers=False) == [("ssh", True)]


async def test_a_file_call_waits_for_ssh_even_when_the_channel_answers_first(manager):
    _, seen = await booting(manager, "cold")
    manager.vms["vm1"].channel.ready = lambda: True  # type: ignore[method-assign]
    try:
        assert await manager.guest("vm1") == "connection"
        assert seen == [True]  # the channel's daemon was up, sshd not yet: it waited for SSH
    finally:
        manager.vms["vm1"].warmup.cancel()
