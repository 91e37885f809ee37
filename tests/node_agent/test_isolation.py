"""The guest egress policy without booting guests: the rules, the self-test, and the refusal.

The self-test tests install real nftables rules in this host's namespace (as the agent does)
and connect from a real process under a VM-range uid. Tests that must see the policy fail use
a uid range of their own that no table covers, so they never weaken what other agents rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node_agent.app import create_app
from node_agent.config import AgentConfig
from node_agent.isolation import (
    DENIED_V4,
    DENIED_V6,
    Isolation,
    IsolationError,
    Nameservers,
    base_table,
    base_table_name,
    nameservers,
    no_egress_table,
    self_test,
)
from node_agent.uids import UidPool

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 256, "disk_gib": 2, "image": "default"}

needs_root_and_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None,
    reason="installs nftables rules and starts processes under other uids: root and nft",
)


def private_uid_range() -> tuple[int, int]:
    """Two uids no other test or agent uses (below the default range)."""
    low = 0x6000_0000 + 2 * random.randrange(1 << 20)  # noqa: S311
    return low, low + 1


def drop_table(name: str) -> None:
    subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True, check=False)


# -- the rules ---------------------------------------------------------------------------------


def test_the_policy_matches_the_vm_range_positively_and_denies_every_private_range():
    rules = base_table(5000, 5999, Nameservers(v4=("10.255.255.53",), v6=()))

    assert "meta skuid 5000-5999 jump guest" in rules
    assert "!=" not in rules  # packets with no socket owner must never enter the guest chain
    assert "ct state established,related accept" in rules
    for denied in (*DENIED_V4, *DENIED_V6):
        assert denied in rules
    assert "fib daddr type { local, broadcast, multicast, anycast } goto deny" in rules
    assert "reject with tcp reset" in rules


def test_dns_is_allowed_only_to_the_hosts_resolvers_on_port_53(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# x\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nsearch a\n")

    found = nameservers(resolv)
    rules = base_table(5000, 5999, found)

    assert found == Nameservers(v4=("10.255.255.53",), v6=("fe80::1",))
    assert (
        "ct original ip daddr { 10.255.255.53 } meta l4proto { tcp, udp } "
        "ct original proto-dst 53 accept"
    ) in rules
    assert "ct original ip6 daddr { fe80::1 }" in rules
    # The exception comes before the private-range rejects, or it would never apply.
    assert rules.index("proto-dst 53 accept") < rules.index("goto deny\n")


def test_egress_none_rejects_every_new_connection_of_the_agents_vm_uids():
    rules = no_egress_table("abc123", [7, 5])

    assert "elements = { 5, 7 }" in rules
    assert "meta skuid @uids ct state established,related accept" in rules
    assert "meta skuid @uids goto deny" in rules


@needs_root_and_nft
def test_the_rendered_tables_are_valid_nftables():
    for script in (
        base_table(5000, 5999, nameservers()),
        no_egress_table("abc123", []),
        no_egress_table("abc123", [5000]),
    ):
        done = subprocess.run(["nft", "-c", "-f", "-"], input=script.encode(), check=False)
        assert done.returncode == 0, script


# -- the self-test -------------------------------------------------------------------------------


@needs_root_and_nft
async def test_self_test_fails_when_nothing_stops_a_vm_uid():
    _, high = private_uid_range()  # no table covers it

    with pytest.raises(IsolationError, match=r"self-test failed: a VM uid reached 127\.0\.0\.1:"):
        await self_test(high, [])


@needs_root_and_nft
async def test_self_test_passes_once_the_policy_is_installed_and_covers_the_agent_port(tmp_path):
    low, high = private_uid_range()
    agent_port = socket.create_server(("127.0.0.1", 0))
    config = AgentConfig(data_dir=tmp_path, token="t" * 20, vm_uid_range=(low, high))
    guard = Isolation(config, UidPool(low, high, tmp_path / "claims"))
    try:
        await guard.start([])
        assert guard.status() == {
            "guest_isolation": True,
            "guest_egress": "public",
            "isolation_detail": "",
        }
        await self_test(high, [agent_port.getsockname()])
        agent_port.setblocking(False)
        with pytest.raises(BlockingIOError):
            agent_port.accept()
    finally:
        agent_port.close()
        drop_table(base_table_name(low, high))


@needs_root_and_nft
async def test_the_watchdog_reinstalls_flushed_rules(tmp_path):
    low, high = private_uid_range()
    config = AgentConfig(data_dir=tmp_path, token="t" * 20, vm_uid_range=(low, high))
    guard = Isolation(config, UidPool(low, high, tmp_path / "claims"))
    await guard.start([])
    drop_table(base_table_name(low, high))
    watch = asyncio.create_task(guard.watch(interval=0.05))
    try:
        await self_test_passes_within(high, seconds=10)
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        drop_table(base_table_name(low, high))


async def self_test_passes_within(uid: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            try:
                await self_test(uid, [])
                return
            except IsolationError:
                await asyncio.sleep(0.1)


# -- the agent refuses VMs while the policy is not in force -------------------------------------


@pytest.fixture
def unprotected_agent(
    tmp_path: Path, fake_image_dir: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """An agent whose rules never get installed (as if a firewall reload ate them)."""

    async def installs_nothing(self: Isolation) -> None:
        return None

    monkeypatch.setattr(Isolation, "_install", installs_nothing)
    config = AgentConfig(
        data_dir=tmp_path / "data",
        token=token,
        image_dir=fake_image_dir,
        accel="tcg",
        vm_uid_range=private_uid_range(),
        uid_claims_dir=tmp_path / "claims",
    )
    with TestClient(create_app(config)) as client:
        yield client


@needs_root_and_nft
def test_agent_refuses_to_create_vms_when_the_self_test_fails(unprotected_agent, token, caplog):
    auth = {"Authorization": f"Bearer {token}"}
    caplog.set_level(logging.ERROR, logger="node_agent.isolation")

    created = unprotected_agent.post("/vms", headers=auth, json=SPEC)
    health = unprotected_agent.get("/health", headers=auth).json()

    assert created.status_code == 503
    assert created.json()["code"] == "isolation_unavailable"
    assert "self-test failed" in created.json()["detail"]
    assert health["guest_isolation"] is False and "self-test failed" in health["isolation_detail"]
    assert unprotected_agent.get("/vms", headers=auth).json() == []
    assert [r.message for r in caplog.records if "NOT in force" in r.message]


def test_agent_without_nftables_serves_its_api_but_refuses_vms(tmp_path, fake_image_dir, token):
    config = AgentConfig(
        data_dir=tmp_path / "data",
        token=token,
        image_dir=fake_image_dir,
        accel="tcg",
        nft="nft-is-not-installed",
        uid_claims_dir=tmp_path / "claims",
    )
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(config)) as client:
        created = client.post("/vms", headers=auth, json=SPEC)
        started = client.post("/vms/vm1/start", headers=auth)
        health = client.get("/health", headers=auth)

    assert created.status_code == 503
    assert "nftables is not installed" in created.json()["detail"]
    assert started.status_code == 404  # nothing was created
    assert health.status_code == 200 and health.json()["guest_isolation"] is False


@needs_root_and_nft
def test_agent_refuses_to_start_an_existing_vm_once_the_policy_is_gone(
    agent_client, token, monkeypatch
):
    auth = {"Authorization": f"Bearer {token}"}
    assert agent_client.post("/vms", headers=auth, json=SPEC).status_code == 200
    guard = agent_client.app.state.manager.isolation

    async def lost(self: Isolation) -> None:
        raise IsolationError("nft list table failed: No such file or directory")

    monkeypatch.setattr(Isolation, "_install", lost)
    agent_client.portal.call(guard._establish)  # what the watchdog does after a flush
    started = agent_client.post("/vms/vm1/start", headers=auth)

    assert started.status_code == 503 and started.json()["code"] == "isolation_unavailable"
    assert agent_client.get("/vms/vm1", headers=auth).json()["state"] == "stopped"
