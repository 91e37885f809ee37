"""Boot time through the node agent versus bare QEMU, same image, same flags.

    .venv/bin/python bench/vm_boot.py [--runs N] [--image-dir DIR] [--accel auto|kvm|tcg]

(a) agent: ``HttpNodeDriver.vm_create`` + ``vm_start``, then ``vm_status`` every 0.25 s until
    ``ssh_ready`` (SSH login done and the instance id checked);
(b) bare: ``qemu-img create`` of an overlay and the agent's own QEMU command line, then the
    forwarded port polled until the SSH banner appears.
Prints both and the agent's overhead (target: at most 10%). One VM at a time. Prints only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from node_agent import qemu  # noqa: E402
from node_agent.config import DEFAULT_IMAGE_DIR  # noqa: E402
from node_agent.errors import ImageNotFoundError  # noqa: E402
from node_agent.guest import wait_for_banner  # noqa: E402
from vm_manager.drivers.http import HttpNodeDriver  # noqa: E402

SPEC = {"vcpus": 1, "memory_mb": 512, "disk_gib": 4, "image": "default"}
BOOT_LIMIT = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_agent(
    work: Path, image_dir: Path, accel: str, token: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    token_file = work / "token"
    token_file.write_text(token)
    log = (work / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(work / "data"), "--image-dir", str(image_dir),
         "--token-file", str(token_file), "--accel", accel],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {token}"}).is_success:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"agent did not start; see {work / 'agent.log'}")


async def boot_via_agent(driver: HttpNodeDriver, vm_id: str) -> float:
    started = time.monotonic()
    await driver.vm_create({"vm_id": vm_id, **SPEC})  # type: ignore[typeddict-item]
    await driver.vm_start(vm_id)
    while time.monotonic() - started < BOOT_LIMIT:
        if (await driver.vm_status(vm_id))["ssh_ready"]:
            elapsed = time.monotonic() - started
            await driver.vm_delete(vm_id)
            return elapsed
        await asyncio.sleep(0.25)
    await driver.vm_delete(vm_id)
    raise SystemExit(f"{vm_id} did not become SSH-ready in {BOOT_LIMIT:.0f}s")


async def boot_bare(work: Path, image_dir: Path, accel: str, authorized_keys: Path) -> float:
    vm_dir = Path(tempfile.mkdtemp(prefix="bare-", dir=work))
    files = qemu.VMFiles.under(vm_dir)
    image = qemu.BootImage.load(image_dir, "default")
    instance_id = secrets.token_hex(16)
    port = qemu.PortRegistry().reserve("bare")
    started = time.monotonic()
    await qemu.create_overlay(image.rootfs, files.overlay, SPEC["disk_gib"])  # type: ignore[arg-type]
    command = qemu.qemu_command(
        accel=accel, image=image, files=files, vcpus=1, memory_mb=512, ssh_port=port,
        instance_id=instance_id, authorized_keys=authorized_keys,
    )  # fmt: skip
    await qemu.launch(command, files.launch_log)
    try:
        while time.monotonic() - started < BOOT_LIMIT:
            if await wait_for_banner(port):
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        raise SystemExit(f"bare QEMU showed no SSH banner in {BOOT_LIMIT:.0f}s")
    finally:
        pid = qemu.read_pid(files.pidfile)
        if pid is not None:
            await qemu.kill_qemu(pid, instance_id)
        files.qmp_socket.unlink(missing_ok=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    args = parser.parse_args()
    try:
        qemu.BootImage.load(args.image_dir, "default")
    except ImageNotFoundError as exc:
        sys.exit(f"{exc.detail} in {args.image_dir}: run scripts/build-guest-image.sh")

    with tempfile.TemporaryDirectory(prefix="pequeroku-bench-") as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(32)
        agent, url = start_agent(work, args.image_dir, args.accel, token)
        try:
            driver = HttpNodeDriver(url, token, timeout=120)
            accel = (await driver.health())["accel"]
            authorized_keys = work / "data" / "ssh" / "authorized_keys"
            agent_times, bare_times = [], []
            for run in range(args.runs):
                agent_times.append(await boot_via_agent(driver, f"bench-{run}"))
                print(f"run {run + 1}: agent create->ssh_ready {agent_times[-1]:.1f}s")
                bare_times.append(await boot_bare(work, args.image_dir, accel, authorized_keys))
                print(f"run {run + 1}: bare qemu -> SSH banner {bare_times[-1]:.1f}s")
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)

    agent_s, bare_s = statistics.median(agent_times), statistics.median(bare_times)
    print(f"accelerator: {accel}, runs: {args.runs}, cpus: {os.cpu_count()}")
    print(f"(a) via agent, create -> SSH ready (median): {agent_s:.1f}s")
    print(f"(b) bare QEMU, launch -> SSH banner (median): {bare_s:.1f}s")
    print(
        f"agent/bare ratio: {agent_s / bare_s:.3f} (overhead {100 * (agent_s / bare_s - 1):+.1f}%)"
    )


if __name__ == "__main__":
    asyncio.run(main())
