"""The node agent as a real process, its images, and booting VMs through it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from node_agent.config import DEFAULT_IMAGE_DIR
from node_agent.qemu import qemu_alive, read_pid
from tests.support.host import REPO, free_port
from vm_manager.drivers.http import HttpNodeDriver

TOKEN = "test-node-token-0123456789abcdef"
# A built image: its kernel is the uncompressed vmlinux (fake images use an empty vmlinuz).
IMAGE_FILES = ("vmlinux", "initrd.img", "rootfs.qcow2", "cmdline")


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


def host_kernel() -> tuple[Path, Path] | None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        return None
    initrd = Path(str(kernels[-1]).replace("vmlinuz-", "initrd.img-"))
    return (kernels[-1], initrd) if initrd.is_file() else None


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
