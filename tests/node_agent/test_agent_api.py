"""The agent's API without booting guests: auth, path confinement, errors, the HTTP driver."""

from __future__ import annotations

import os
import re
import signal
import stat

import pytest
from fastapi.routing import APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from node_agent.qemu import PortRegistry, qemu_alive
from tests.support.host import free_port
from vm_manager.drivers import (
    NodeAuthError,
    NodeBadRequest,
    NodeUnavailable,
    PathNotAllowed,
    VMNotFound,
    VMNotRunning,
)
from vm_manager.drivers.http import HttpNodeDriver

SPEC = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 256, "disk_gib": 2, "image": "default"}
ESCAPES = ["../etc/passwd", "/etc/passwd", "/app/../etc", "/application", "a\x00b"]


def _http_routes(client: TestClient) -> list[tuple[str, str]]:
    routes = []
    for route in client.app.routes:
        methods = getattr(route, "methods", None) or set()
        path = re.sub(r"\{[^}]+\}", "vm1", route.path)
        routes += [(method, path) for method in sorted(methods - {"HEAD"})]
    return routes


def test_every_http_route_refuses_a_missing_or_wrong_token(agent_client, token):
    routes = _http_routes(agent_client)
    assert ("GET", "/health") in routes
    assert ("GET", "/openapi.json") in routes

    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            response = agent_client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["code"] == "unauthorized"


def test_terminal_websocket_refuses_a_wrong_token(agent_client):
    terminals = [r for r in agent_client.app.routes if isinstance(r, APIWebSocketRoute)]
    assert terminals

    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        agent_client.websocket_connect(
            "/vms/vm1/terminal", headers={"Authorization": "Bearer wrong"}
        ),
    ):
        pass

    assert denied.value.status_code == 401


def test_openapi_lists_the_vm_routes(agent_client, token):
    response = agent_client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"})

    paths = response.json()["paths"]
    assert {"/health", "/vms", "/vms/{vm_id}/exec", "/vms/{vm_id}/files/content"} <= set(paths)


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_outside_the_workspace_are_refused_on_every_file_route(agent_client, token, path):
    auth = {"Authorization": f"Bearer {token}"}
    calls = [
        ("GET", "/vms/vm1/files", {"params": {"path": path}}),
        ("DELETE", "/vms/vm1/files", {"params": {"path": path}}),
        ("GET", "/vms/vm1/files/content", {"params": {"path": path}}),
        ("PUT", "/vms/vm1/files/content", {"params": {"path": path}, "content": b"x"}),
        ("POST", "/vms/vm1/files/mkdir", {"json": {"path": path}}),
        ("POST", "/vms/vm1/files/move", {"json": {"src": path, "dst": "/app/x"}}),
        ("POST", "/vms/vm1/files/move", {"json": {"src": "/app/x", "dst": path}}),
        ("GET", "/vms/vm1/archive", {"params": {"root": path, "fmt": "zip"}}),
    ]
    for method, url, kwargs in calls:
        response = agent_client.request(method, url, headers=auth, **kwargs)
        assert response.status_code == 400, (method, url)
        assert response.json()["code"] == "path_not_allowed"


def test_unknown_vm_is_404_and_malformed_body_is_400(agent_client, token):
    auth = {"Authorization": f"Bearer {token}"}

    assert agent_client.get("/vms/nope", headers=auth).json()["code"] == "vm_not_found"
    assert agent_client.post("/vms", headers=auth, json={"vm_id": 1}).status_code == 400
    assert agent_client.delete("/vms/nope", headers=auth).status_code == 204


def test_port_registry_never_hands_one_port_to_two_vms():
    ports = PortRegistry(low=free_port(), high=65000)

    first, second = ports.reserve("a"), ports.reserve("b")

    assert first != second
    assert not ports.claim(first, "b")
    ports.release("a")
    assert ports.claim(first, "b")


def test_a_process_that_is_not_that_vms_qemu_is_not_alive():
    assert not qemu_alive(os.getpid(), "abc")
    assert not qemu_alive(None, "abc")


# -- the HTTP driver against a real agent process (no guest boots) ---------------------------


@pytest.fixture
def agent(start_agent, fake_image_dir):
    return start_agent(fake_image_dir)


async def test_driver_creates_lists_and_deletes_a_vm(agent):
    driver = agent.driver()

    created = await driver.vm_create(SPEC)
    again = await driver.vm_create(SPEC)

    assert created == again
    assert created["state"] == "stopped" and not created["ssh_ready"]
    assert [vm["vm_id"] for vm in await driver.vm_list()] == ["vm1"]
    assert (agent.data_dir / "vms" / "vm1" / "overlay.qcow2").is_file()
    await driver.vm_delete("vm1")
    await driver.vm_delete("vm1")
    assert await driver.vm_list() == []
    assert not (agent.data_dir / "vms" / "vm1").exists()


async def test_driver_health_reports_the_forced_accelerator(agent):
    health = await agent.driver().health()

    assert health["accel"] == "tcg" and health["kvm_available"] is False
    assert health["running_vms"] == 0 and health["capacity_vcpus"] >= 1


async def test_health_reports_the_data_dirs_disk_and_the_egress_policy(agent):
    health = await agent.driver().health()
    usage = os.statvfs(agent.data_dir)

    assert health["capacity_disk_mb"] == usage.f_blocks * usage.f_frsize // 2**20
    assert 0 < health["free_disk_mb"] <= health["capacity_disk_mb"]
    assert abs(health["free_disk_mb"] - usage.f_bavail * usage.f_frsize // 2**20) < 512
    assert health["guest_isolation"] is True, health["isolation_detail"]  # type: ignore[typeddict-item]
    assert health["guest_egress"] == "public"  # type: ignore[typeddict-item]


def test_the_data_dir_is_private_to_the_agent(agent):
    for path in (agent.data_dir, agent.data_dir / "vms", agent.data_dir / "ssh"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((agent.data_dir / "ssh" / "id_ed25519").stat().st_mode) == 0o600


async def test_driver_maps_agent_errors(agent):
    driver = agent.driver()
    await driver.vm_create(SPEC)

    with pytest.raises(VMNotFound):
        await driver.vm_status("missing")
    with pytest.raises(VMNotRunning):
        await driver.exec("vm1", "true")
    with pytest.raises(VMNotRunning):
        await driver.read_file("vm1", "/app/a")
    with pytest.raises(PathNotAllowed):
        await driver.read_file("vm1", "/app/../etc/passwd")
    with pytest.raises(PathNotAllowed):
        await driver.write_file("vm1", "../x", b"x")
    with pytest.raises(NodeBadRequest):
        await driver.vm_create({**SPEC, "vm_id": "../evil"})
    with pytest.raises(NodeBadRequest):
        await driver.vm_create({**SPEC, "vm_id": "vm2", "image": "missing"})
    with pytest.raises(VMNotRunning):
        await driver.open_terminal("vm1")
    with pytest.raises(VMNotFound):
        await driver.open_terminal("missing")


async def test_driver_archive_of_a_stopped_vm_is_refused(agent):
    driver = agent.driver()
    await driver.vm_create(SPEC)

    with pytest.raises(VMNotRunning):
        async for _ in driver.archive("vm1", "/app", "zip"):
            pass


async def test_wrong_token_is_an_auth_error_that_never_shows_the_token(agent):
    secret = "wrong-token-that-must-stay-private"
    driver = agent.driver(token=secret)

    with pytest.raises(NodeAuthError) as refused:
        await driver.health()
    with pytest.raises(NodeAuthError):
        await driver.open_terminal("vm1")

    assert secret not in str(refused.value) and secret not in repr(driver)
    assert secret not in agent.log() and agent.token not in agent.log()


async def test_unreachable_agent_is_node_unavailable():
    driver = HttpNodeDriver(f"http://127.0.0.1:{free_port()}", "t" * 32, timeout=2)

    with pytest.raises(NodeUnavailable):
        await driver.health()
    with pytest.raises(NodeUnavailable):
        await driver.open_terminal("vm1")


def test_for_node_uses_the_nodes_url_and_token():
    class FakeNode:
        agent_url = "http://10.0.0.5:8081"
        auth_token = "node-token"

    driver = HttpNodeDriver.for_node(FakeNode())  # type: ignore[arg-type]

    assert driver.base_url == "http://10.0.0.5:8081"
    assert "node-token" not in repr(driver)


async def test_agent_shuts_down_gracefully_on_sigterm(agent):
    await agent.driver().vm_create(SPEC)

    agent.kill(signal.SIGTERM)

    assert "Application shutdown complete" in agent.log()
