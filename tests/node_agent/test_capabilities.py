"""The node agent works with exactly the capabilities the compose file grants its container.

The agent runs here as root with its bounding set cut down (``setpriv``) the way
``cap_drop: [ALL]`` and ``cap_add`` do in Docker, plus no-new-privileges; it must prove its
egress policy and start a real QEMU (the host's kernel). Without NET_ADMIN it must refuse VMs.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.support.host import REPO
from vm_manager.drivers import NodeUnavailable

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 128, "disk_gib": 1, "image": "default"}


def compose_caps() -> list[str]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return [cap.lower() for cap in compose["services"]["node-agent"]["cap_add"]]


def confined(caps: list[str]) -> tuple[str, ...]:
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    bounding = ",".join(["-all", *(f"+{cap}" for cap in caps)])
    return ("setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs")


async def test_the_agent_needs_only_the_composes_capabilities(start_agent, kernel_image_dir):
    agent = start_agent(kernel_image_dir, wrapper=confined(compose_caps()))
    driver = agent.driver()

    health = await driver.health()
    await driver.vm_create(SPEC)  # type: ignore[arg-type]
    started = await driver.vm_start("vm1")
    stopped = await driver.vm_stop("vm1", timeout=0)
    await driver.vm_delete("vm1")

    assert health["guest_isolation"] is True, health["isolation_detail"]
    assert started["state"] == "running"
    assert stopped["state"] == "stopped"


async def test_without_net_admin_the_agent_refuses_vms(start_agent, kernel_image_dir):
    caps = [cap for cap in compose_caps() if cap != "net_admin"]
    agent = start_agent(kernel_image_dir, wrapper=confined(caps))

    health = await agent.driver().health()
    with pytest.raises(NodeUnavailable, match="guest isolation is not in force"):
        await agent.driver().vm_create(SPEC)  # type: ignore[arg-type]

    assert health["guest_isolation"] is False
    assert "nft" in health["isolation_detail"]
