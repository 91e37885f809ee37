"""Fixtures for the node agent: tokens, images, the agent in-process and as a real process.

- ``agent_app`` / ``agent_client``: the FastAPI app in-process (``TestClient``), fake image.
- ``start_agent``: factory starting ``python -m node_agent`` as a real subprocess.
- ``guest_image_dir``: the real guest image; skips when it is not built, unless
  ``PEQUEROKU_REQUIRE_VM`` is set (CI), where a missing image is a failure.
- ``fake_guest``: a local SSH server standing in for a guest: real SSH, the host's bash, ``/app``
  mapped to a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from fastapi.testclient import TestClient

from node_agent import guest
from node_agent.app import create_app
from node_agent.config import DEFAULT_IMAGE_DIR, AgentConfig
from node_agent.identity import load_or_create_node_key, public_line
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


def host_kernel() -> tuple[Path, Path] | None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        return None
    initrd = Path(str(kernels[-1]).replace("vmlinuz-", "initrd.img-"))
    return (kernels[-1], initrd) if initrd.is_file() else None


@pytest.fixture
def kernel_image_dir(tmp_path: Path) -> Path:
    """An image QEMU really starts (the host's kernel) that never reaches a guest userspace:
    enough to launch, sandbox and stop real QEMU processes in a second."""
    found = host_kernel()
    if found is None or os.geteuid() != 0:
        pytest.skip("needs root and a kernel with its initrd in /boot")
    root = make_fake_image(tmp_path / "kernel-images")
    for name, source in zip(("vmlinuz", "initrd.img"), found, strict=True):
        (root / "default" / name).unlink()
        (root / "default" / name).symlink_to(source)
    (root / "default" / "cmdline").write_text("console=ttyS0 panic=-1\n")
    return root


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

    def driver(self, token: str | None = None, ca_file: str | None = None) -> HttpNodeDriver:
        return HttpNodeDriver(self.url, token or self.token, timeout=60, ca_file=ca_file)

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


def wait_healthy(
    url: str, token: str, proc: subprocess.Popen[bytes], timeout: float, verify: object = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(
                f"{url}/health",
                headers={"Authorization": f"Bearer {token}"},
                timeout=15,
                verify=verify,  # type: ignore[arg-type]
            )
            if response.status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("agent did not become healthy")


def write_token_file(path: Path, token: str) -> Path:
    """The agent refuses a token file others can read: create it 0600 from the start."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    return path


def spawn_agent(
    data_dir: Path,
    image_dir: Path,
    token: str,
    accel: str = "tcg",
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    wrapper: tuple[str, ...] = (),
    scheme: str = "http",
    verify: object = True,
    golden: bool = False,
) -> AgentProcess:
    """``python -m node_agent`` as a real process, once ``/health`` answers.

    ``wrapper`` prefixes the command (e.g. ``ip netns exec NS``), ``extra_args`` are agent
    options (``--guest-egress none``, ``--tls-cert ...``).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    token_file = write_token_file(data_dir.parent / f"{data_dir.name}.token", token)
    log_path = data_dir.parent / f"{data_dir.name}-agent-{port}.log"
    command = [
        *wrapper,
        sys.executable,
        "-m",
        "node_agent",
        "--listen",
        f"{host}:{port}",
        "--data-dir",
        str(data_dir),
        "--image-dir",
        str(image_dir),
        "--token-file",
        str(token_file),
        "--accel",
        accel,
        # Off unless asked: a golden build is one more boot in the background of every test.
        "--golden-snapshots",
        "on" if golden else "off",
        *extra_args,
    ]
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    url = f"{scheme}://{host}:{port}"
    try:
        wait_healthy(url, token, proc, timeout=30, verify=verify)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise RuntimeError(log_path.read_text(errors="replace")[-2000:]) from None
    return AgentProcess(proc=proc, url=url, data_dir=data_dir, log_path=log_path, token=token)


@pytest.fixture
def start_agent(tmp_path: Path, token: str) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(
        image_dir: Path, data_dir: Path | None = None, accel: str = "tcg", **options: Any
    ) -> AgentProcess:
        agent = spawn_agent(data_dir or tmp_path / "data", image_dir, token, accel, **options)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill(signal.SIGTERM)
        kill_vms(agent.data_dir)


BOOT_TIMEOUT = 300.0


def vm_spec(vm_id: str) -> dict[str, object]:
    return {"vm_id": vm_id, "vcpus": 1, "memory_mb": 512, "disk_gib": 4, "image": "default"}


async def wait_ssh_ready(driver: HttpNodeDriver, vm_id: str, timeout: float = BOOT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await driver.vm_status(vm_id)
        assert status["state"] == "running", status
        if status["ssh_ready"]:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{vm_id} not SSH-ready after {timeout:.0f}s")


async def boot(driver: HttpNodeDriver, vm_id: str) -> None:
    await driver.vm_create(vm_spec(vm_id))  # type: ignore[arg-type]
    await driver.vm_start(vm_id)
    await wait_ssh_ready(driver, vm_id)


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


# -- a stand-in guest over real SSH -------------------------------------------------------

INSTANCE_ID = "0123456789abcdef"


@dataclass
class FakeGuest:
    port: int
    workspace: Path
    key: asyncssh.SSHKey
    host_key: asyncssh.SSHKey

    def connection(
        self, instance_id: str = INSTANCE_ID, host_key: asyncssh.SSHKey | None = None
    ) -> guest.GuestConnection:
        pinned = host_key or self.host_key
        return guest.GuestConnection("vm1", instance_id, lambda: self.port, self.key, pinned)


class _AcceptKeys(asyncssh.SSHServer):
    pass


def _handler(workspace: Path, id_file: Path) -> Callable[..., Awaitable[None]]:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = (process.command or "").replace(guest.INSTANCE_ID_PATH, str(id_file))
        local = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command.replace("/app", str(workspace)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert local.stdin and local.stdout and local.stderr

        async def feed() -> None:
            while data := await process.stdin.read(65536):
                local.stdin.write(data)
                await local.stdin.drain()
            local.stdin.close()

        async def pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
            while data := await source.read(65536):
                sink.write(data)

        await asyncio.gather(
            feed(), pump(local.stdout, process.stdout), pump(local.stderr, process.stderr)
        )
        process.exit(await local.wait())

    return handle


@pytest.fixture
async def fake_guest() -> AsyncIterator[FakeGuest]:
    root = Path(tempfile.mkdtemp(prefix="pqk-guest-"))  # never under a path containing /app
    workspace, id_file = root / "ws", root / "instance_id"
    workspace.mkdir()
    (workspace / "etc").symlink_to("/etc")
    id_file.write_text(INSTANCE_ID + "\n")
    key = load_or_create_node_key(root / "ssh")
    authorized = root / "authorized_keys"
    authorized.write_text(public_line(key) + "\n")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        _AcceptKeys,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=str(authorized),
        process_factory=_handler(workspace, id_file),
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        public = asyncssh.import_public_key(host_key.export_public_key())
        yield FakeGuest(port=port, workspace=workspace, key=key, host_key=public)
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(root, ignore_errors=True)
