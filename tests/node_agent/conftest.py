"""Fixtures for the node agent: tokens, images, the agent in-process and as a real process.

- ``agent_app`` / ``agent_client``: the FastAPI app in-process (``TestClient``), fake image.
- ``start_agent``: factory starting ``python -m node_agent`` as a real subprocess.
- ``guest_image_dir``: the real guest image; skips when it is not built, unless
  ``PEQUEROKU_REQUIRE_VM`` is set (CI), where a missing image is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from node_agent.app import create_app
from node_agent.config import DEFAULT_IMAGE_DIR, AgentConfig
from node_agent.qemu import qemu_alive, read_pid
from vm_manager.drivers.http import HttpNodeDriver

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-node-token-0123456789abcdef"
IMAGE_FILES = ("vmlinuz", "initrd.img", "rootfs.qcow2", "cmdline")


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


def make_fake_image(root: Path) -> Path:
    """An image dir QEMU cannot boot but the agent accepts: enough for the non-VM tests."""
    image = root / "default"
    image.mkdir(parents=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(image / "rootfs.qcow2"), "1G"],
        check=True,
    )
    (image / "vmlinuz").write_bytes(b"")
    (image / "initrd.img").write_bytes(b"")
    (image / "cmdline").write_text("console=ttyS0\n")
    return root


@pytest.fixture
def fake_image_dir(tmp_path: Path) -> Path:
    return make_fake_image(tmp_path / "images")


@pytest.fixture
def agent_client(tmp_path: Path, fake_image_dir: Path, token: str) -> Iterator[TestClient]:
    config = AgentConfig(
        data_dir=tmp_path / "data", token=token, image_dir=fake_image_dir, accel="tcg"
    )
    with TestClient(create_app(config)) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path
    token: str

    def driver(self, token: str | None = None) -> HttpNodeDriver:
        return HttpNodeDriver(self.url, token or self.token, timeout=60)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def kill_vms(data_dir: Path) -> None:
    """Teardown safety net: no QEMU started by a test outlives it."""
    for record in data_dir.glob("vms/*/vm.json"):
        with contextlib.suppress(OSError, ValueError):
            instance_id = json.loads(record.read_text())["instance_id"]
            pid = read_pid(record.parent / "qemu.pid")
            if pid is not None and qemu_alive(pid, instance_id):
                os.kill(pid, signal.SIGKILL)


def wait_healthy(url: str, token: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(
                f"{url}/health", headers={"Authorization": f"Bearer {token}"}, timeout=15
            )
            if response.status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("agent did not become healthy")


def spawn_agent(data_dir: Path, image_dir: Path, token: str, accel: str = "tcg") -> AgentProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token_file = data_dir.parent / f"{data_dir.name}.token"
    token_file.write_text(token)
    log_path = data_dir.parent / f"{data_dir.name}-agent-{port}.log"
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node_agent",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data_dir),
                "--image-dir",
                str(image_dir),
                "--token-file",
                str(token_file),
                "--accel",
                accel,
            ],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, token, proc, timeout=30)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise RuntimeError(log_path.read_text(errors="replace")[-2000:]) from None
    return AgentProcess(proc=proc, url=url, data_dir=data_dir, log_path=log_path, token=token)


@pytest.fixture
def start_agent(tmp_path: Path, token: str) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(image_dir: Path, data_dir: Path | None = None, accel: str = "tcg") -> AgentProcess:
        agent = spawn_agent(data_dir or tmp_path / "data", image_dir, token, accel)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill(signal.SIGTERM)
        kill_vms(agent.data_dir)


def guest_image_root() -> Path:
    return Path(os.environ.get("PEQUEROKU_IMAGE_DIR", str(DEFAULT_IMAGE_DIR)))


@pytest.fixture(scope="session")
def guest_image_dir() -> Path:
    root = guest_image_root()
    missing = [name for name in IMAGE_FILES if not (root / "default" / name).is_file()]
    if missing:
        reason = (
            f"guest image not built in {root}/default (missing {', '.join(missing)}): "
            "run scripts/build-guest-image.sh"
        )
        if os.environ.get("PEQUEROKU_REQUIRE_VM"):
            pytest.fail(reason)
        pytest.skip(reason)
    return root
