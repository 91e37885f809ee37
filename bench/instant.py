"""How fast a container becomes usable, each figure against the cold boot of the same run.

    .venv/bin/python bench/instant.py [--runs N] [--cold-runs N] [--image-dir DIR]
                                      [--accel auto|kvm|tcg] [--memory-mb 1024] [--fill-mb 300]

Everything goes through the web service's driver (``HttpNodeDriver``) against a real node agent
(started here, as root, guest egress policy in force). *Ready* means the first successful
``exec("true")`` round trip, timed from the call that starts the operation:

- cold boot → ready: ``vm_stop`` (hard stop: the saved state is dropped) then ``vm_start``;
- create → ready: ``vm_create`` + ``vm_start`` of a new container, restored from the golden
  snapshot the agent built for its shape (built first, after a seed create, and timed);
- suspend: ``vm_suspend`` of a ``--memory-mb`` guest with ``--fill-mb`` of non-zero memory in
  use (a resident process holding it); host RSS of the suspended container (no QEMU: 0);
- resume → ready: ``vm_start`` of the suspended container until exec answers;
- exec round trip on a ready guest (``--exec-gap`` idle seconds between calls, as a user or an
  AI agent leaves them; then back to back), console keystroke echo over the terminal WebSocket;
- host RSS of an idle running container (its QEMU, after the fill).

Prints p50 and p95 of each. Run it under the heavy lock; it only prints and cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
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
from vm_manager.drivers.base import NodeError  # noqa: E402
from vm_manager.drivers.http import HttpNodeDriver  # noqa: E402

READY_LIMIT = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_agent(
    work: Path, image_dir: Path, accel: str, token: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    token_file = work / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    log = (work / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(work / "data"), "--image-dir", str(image_dir),
         "--token-file", str(token_file), "--accel", accel, "--golden-snapshots", "on"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {token}"}).is_success:
                return proc, url
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"agent did not start; see {work / 'agent.log'}")


def rss_mib(data_dir: Path, vm_id: str) -> float:
    """Host RSS of the VM's QEMU in MiB; 0 when it has none."""
    vm_dir = data_dir / "vms" / vm_id
    with contextlib.suppress(OSError, ValueError, StopIteration, KeyError):
        instance_id = json.loads((vm_dir / "vm.json").read_text())["instance_id"]
        pid = qemu.read_pid(vm_dir / "qemu.pid")
        if qemu.qemu_alive(pid, instance_id):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            return int(next(x for x in status if x.startswith("VmRSS:")).split()[1]) / 1024
    return 0.0


async def until_ready(driver: HttpNodeDriver, vm_id: str, started: float) -> float:
    while time.monotonic() - started < READY_LIMIT:
        with contextlib.suppress(NodeError):
            if (await driver.exec(vm_id, "true", timeout=30))["exit_code"] == 0:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise SystemExit(f"{vm_id} not ready after {READY_LIMIT:.0f}s")


async def create_to_ready(driver: HttpNodeDriver, vm_id: str, spec: dict[str, object]) -> float:
    started = time.monotonic()
    await driver.vm_create({"vm_id": vm_id, **spec})  # type: ignore[typeddict-item]
    await driver.vm_start(vm_id)
    return await until_ready(driver, vm_id, started)


async def keystroke_echo(driver: HttpNodeDriver, vm_id: str, runs: int) -> list[float]:
    """Seconds from sending one character to seeing it echoed by the guest's shell."""
    terminal = await driver.open_terminal(vm_id)
    try:
        await terminal.write(b"stty -echoctl; echo ready-$((6*7))\n")
        seen = b""
        while b"ready-42" not in seen:
            seen += await asyncio.wait_for(terminal.read(), 60)
        await asyncio.sleep(0.5)
        with contextlib.suppress(TimeoutError):
            while True:
                await asyncio.wait_for(terminal.read(), 0.3)
        times = []
        for index in range(runs):
            char = b"abcdefghij"[index % 10 : index % 10 + 1]
            started = time.monotonic()
            await terminal.write(char)
            buffer = b""
            while char not in buffer:
                buffer += await asyncio.wait_for(terminal.read(), 30)
            times.append(time.monotonic() - started)
        await terminal.write(b"\x15")  # ^U: drop the typed line
        return times
    finally:
        await terminal.close()


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return statistics.median(ordered), p95


def row(label: str, values: list[float], unit: str, cold: float | None, target: str) -> None:
    p50, p95 = summary(values)
    scale = 1000.0 if unit == "ms" else 1.0
    versus = f"{p50 / cold:6.3f} x cold" if cold else " " * 13
    print(
        f"{label:34s} p50 {p50 * scale:9.3f} {unit:3s} p95 {p95 * scale:9.3f} {unit:3s}"
        f"  n={len(values):<3d} {versus}   target {target}"
    )


async def run(args: argparse.Namespace, url: str, token: str, data_dir: Path) -> None:
    driver = HttpNodeDriver(url, token, timeout=300)
    spec = {"vcpus": 1, "memory_mb": args.memory_mb, "disk_gib": 4, "image": "default"}
    prefix = secrets.token_hex(3)

    # The first create of this shape has the agent build its golden snapshot (one boot).
    started = time.monotonic()
    await driver.vm_create({"vm_id": f"seed-{prefix}", **spec})  # type: ignore[typeddict-item]
    shape = f"default-1c-{args.memory_mb}m"
    while (golden := (await driver.health()).get("golden_snapshots", {}).get(shape)) != "ready":  # type: ignore[union-attr]
        if golden is None or "failed" in golden:
            sys.exit(f"no golden snapshot for {shape}: {golden}")
        await asyncio.sleep(1)
    print(f"  golden snapshot {shape} built in {time.monotonic() - started:.1f}s", flush=True)
    await driver.vm_delete(f"seed-{prefix}")

    create: list[float] = []
    for index in range(args.create_runs):
        create.append(await create_to_ready(driver, f"new-{prefix}-{index}", spec))
        print(f"  create {index + 1}/{args.create_runs}: {create[-1]:.2f}s", flush=True)
        if index < args.create_runs - 1:
            await driver.vm_delete(f"new-{prefix}-{index}")
    vm_id = f"new-{prefix}-{args.create_runs - 1}"  # the last one stays for the other figures

    # The resident set to save: a process holding --fill-mb of non-zero pages.
    fill = (
        f'setsid nohup python3 -c \'import time; b = bytearray(b"x") * ({args.fill_mb} * 2**20);'
        " time.sleep(10**9)' >/dev/null 2>&1 & sleep 1"
    )
    await driver.exec(vm_id, fill, timeout=300)
    await asyncio.sleep(args.settle)

    # A ready guest between calls (a user or an AI agent thinking), then back to back.
    exec_times, burst_times = [], []
    for _ in range(max(args.runs, 20)):
        await asyncio.sleep(args.exec_gap)
        started = time.monotonic()
        await driver.exec(vm_id, "true")
        exec_times.append(time.monotonic() - started)
    for _ in range(max(args.runs, 20)):
        started = time.monotonic()
        await driver.exec(vm_id, "true")
        burst_times.append(time.monotonic() - started)
    echo = await keystroke_echo(driver, vm_id, max(args.runs, 20))
    idle_rss = [rss_mib(data_dir, vm_id)]

    suspend, resume, suspended_rss, state_mib = [], [], [], []
    for index in range(args.runs):
        started = time.monotonic()
        status = await driver.vm_suspend(vm_id)
        suspend.append(time.monotonic() - started)
        assert status["suspended"], status
        suspended_rss.append(rss_mib(data_dir, vm_id))
        state = data_dir / "vms" / vm_id / "memory.state"
        state_mib.append(state.stat().st_size / 2**20)
        started = time.monotonic()
        status = await driver.vm_start(vm_id)
        resume.append(await until_ready(driver, vm_id, started))
        if status.get("last_boot") != "restored":
            sys.exit(f"resume {index} was not a restore: {status}")
        print(
            f"  suspend {index + 1}/{args.runs}: {suspend[-1]:.2f}s"
            f" ({state_mib[-1]:.0f} MiB), resume → ready {resume[-1]:.2f}s",
            flush=True,
        )

    # Cold boots of the same container: a hard stop discards any saved state.
    cold: list[float] = []
    for index in range(args.cold_runs):
        await driver.vm_stop(vm_id)
        started = time.monotonic()
        status = await driver.vm_start(vm_id)
        cold.append(await until_ready(driver, vm_id, started))
        if status.get("last_boot") != "cold":
            sys.exit(f"cold boot {index} was not cold: {status}")
        print(f"  cold boot {index + 1}/{args.cold_runs}: {cold[-1]:.2f}s", flush=True)

    cold_p50 = statistics.median(cold)
    print()
    print(
        f"bench/instant.py: accel {args.accel}, {args.memory_mb} MiB guest, {args.fill_mb} MiB"
        f" filled, {os.cpu_count()} host cores, load {os.getloadavg()[0]:.1f}"
    )
    row("cold boot → ready", cold, "s", None, "≤ 10 s (aim 5 s)")
    row("create → ready (golden snapshot)", create, "s", cold_p50, "≤ 1.0 s p50, ≤ 1.5 s p95")
    row("suspend (1 GiB, ~300 MiB used)", suspend, "s", cold_p50, "≤ 2 s")
    row("resume → ready", resume, "s", cold_p50, "≤ 1.5 s p50")
    row(f"exec round trip ({args.exec_gap:g} s apart)", exec_times, "ms", None, "≤ 50 ms p50")
    row("exec round trip (back to back)", burst_times, "ms", None, "")
    row("console keystroke echo", echo, "ms", None, "≤ 20 ms p50")
    row("host RSS, suspended", suspended_rss, "MiB", None, "0")
    row("host RSS, idle running", idle_rss, "MiB", None, "printed")
    row("saved state size", state_mib, "MiB", None, "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="suspend/resume cycles")
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--create-runs", type=int, default=10)
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--accel", default="tcg", choices=("auto", "kvm", "tcg"))
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--fill-mb", type=int, default=300)
    parser.add_argument("--exec-gap", type=float, default=0.5, help="idle seconds between execs")
    parser.add_argument("--agent-log", type=Path, help="keep the agent's log (timestamps) here")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before measuring")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/instant.py: run as root (the agent starts VMs under uids of their own)")
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="pequeroku-instant-") as tmp:
        work = Path(tmp)
        proc, url = start_agent(work, args.image_dir, args.accel, token)
        try:
            asyncio.run(run(args, url, token, work / "data"))
        finally:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()
            if args.agent_log is not None:
                shutil.copyfile(work / "agent.log", args.agent_log)
            for record in (work / "data").glob("vms/*/vm.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    pid = qemu.read_pid(record.parent / "qemu.pid")
                    if qemu.qemu_alive(pid, json.loads(record.read_text())["instance_id"]):
                        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
