"""The shell hypervisor's app in-process (the same routes the agent process serves), so its
paths are measured: lifecycle, files and commands of one VM record."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from node_agent.config import AgentConfig
from node_agent.shell_hypervisor import create_app


@pytest.fixture
def client(tmp_path: Path, token: str) -> Iterator[TestClient]:
    app = create_app(AgentConfig(data_dir=tmp_path / "data", token=token))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def running(client: TestClient) -> TestClient:
    spec = {"vm_id": "vm1", "vcpus": 1, "memory_mb": 512, "disk_gib": 1}
    assert client.post("/vms", json=spec).status_code == 200
    assert client.post("/vms/vm1/start").json()["state"] == "running"
    return client


def test_a_vm_record_goes_through_start_suspend_stop_and_delete(running: TestClient) -> None:
    suspended = running.post("/vms/vm1/suspend").json()
    resumed = running.post("/vms/vm1/start").json()
    stopped = running.post("/vms/vm1/stop").json()
    deleted = running.delete("/vms/vm1")

    assert (suspended["suspended"], resumed["last_boot"], stopped["state"]) == (
        True,
        "restored",
        "stopped",
    )
    assert deleted.status_code == 204
    assert running.get("/vms").json() == []
    assert running.get("/vms/vm1").status_code == 404


def test_files_round_trip_and_leave_no_way_out_of_app(running: TestClient) -> None:
    write = running.put(
        "/vms/vm1/files/content", params={"path": "/app/src/a.txt"}, content=b"data"
    )
    mkdir = running.post("/vms/vm1/files/mkdir", json={"path": "/app/docs"})
    move = running.post("/vms/vm1/files/move", json={"src": "/app/src/a.txt", "dst": "/app/b.txt"})
    listing = {e["name"] for e in running.get("/vms/vm1/files", params={"path": "/app"}).json()}
    content = running.get("/vms/vm1/files/content", params={"path": "/app/b.txt"}).content
    archive = running.get("/vms/vm1/archive", params={"root": "/app", "fmt": "tar.gz"}).content
    escape = running.get("/vms/vm1/files/content", params={"path": "/app/../etc/passwd"})
    delete = running.delete("/vms/vm1/files", params={"path": "/app/b.txt"})

    assert [r.status_code for r in (write, mkdir, move, delete)] == [204, 204, 204, 204]
    assert {"b.txt", "docs", "src"} <= listing
    assert content == b"data"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert any(name.endswith("b.txt") for name in tar.getnames())
    assert escape.status_code == 400


def test_commands_run_in_the_vms_folder_and_report_stats(running: TestClient) -> None:
    result = running.post("/vms/vm1/exec", json={"cmd": "echo hi > made.txt; echo $((6*7))"})
    stats = running.get("/vms/vm1/stats")
    health = running.get("/health").json()

    assert result.json()["stdout"].strip() == "42"
    assert (
        running.get("/vms/vm1/files/content", params={"path": "/app/made.txt"}).content == b"hi\n"
    )
    assert stats.status_code == 200
    assert health["accel"] == "shell"
