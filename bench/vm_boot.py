"""Boot time through the node agent versus bare QEMU, same image, same hardened launch.

    .venv/bin/python bench/vm_boot.py [--runs N (5)] [--image-dir DIR] [--accel auto|kvm|tcg]
                                      [--legacy]

(a) agent: ``HttpNodeDriver.vm_create`` + ``vm_start``, then ``vm_status`` every 0.25 s until
    ``ssh_ready`` (SSH login with the pinned host key done, instance id checked);
(b) bare: ``qemu-img create`` of an overlay and the agent's own launch (the VM-uid, sandboxed,
    fd-passing QEMU command line), then the forwarded port polled until the SSH banner appears;
(c) with ``--legacy``: bare QEMU as the agent ran it before guest isolation (as root, no
    ``-sandbox``/``-nodefaults``, default devices, serial log file), same image and polling.
The agent runs as root with the guest egress policy in force (it refuses VMs otherwise), so
(a) and (b) both boot guests whose every packet goes through the policy. Prints the agent's
overhead (a/b, target at most 1.10) two ways: across runs (median and fastest), and within
each agent boot (ssh_ready against the banner of that same boot, which a shared machine's noise
cannot skew); the hardening's (b/c with --legacy); and each QEMU's CPU time and memory at SSH
time. One VM at a time. Run it under the heavy lock; it only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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

import asyncssh  # noqa: E402
import httpx  # noqa: E402

from node_agent import qemu  # noqa: E402
from node_agent.config import DEFAULT_IMAGE_DIR, DEFAULT_UID_CLAIMS_DIR, DEFAULT_VM_UID_RANGE  # noqa: E402
from node_agent.errors import ImageNotFoundError  # noqa: E402
from node_agent.guest import wait_for_banner  # noqa: E402
from node_agent.identity import GuestIdentity, ensure_private_dir  # noqa: E402
from node_agent.uids import UidPool  # noqa: E402
from vm_manager.drivers.http import HttpNodeDriver  # noqa: E402

SPEC = {"vcpus": 1, "memory_mb": 512, "disk_gib": 4, "image": "default"}
BOOT_LIMIT = 600.0
RATIO_TARGET = 1.10


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
         "--token-file", str(token_file), "--accel", accel, "--golden-snapshots", "off"],
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


def qemu_cost(pid: int | None) -> tuple[float, float]:  # (RSS MiB, CPU s)
    """QEMU's resident memory (MiB) and CPU time (s) so far: what the boot cost the host,
    less sensitive than wall time to other work on a shared machine."""
    with contextlib.suppress(OSError, ValueError, StopIteration, IndexError):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        rss = int(next(x for x in status if x.startswith("VmRSS:")).split()[1]) / 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0, 0.0


async def boot_via_agent(
    driver: HttpNodeDriver, vm_id: str, data_dir: Path
) -> tuple[float, float, float, float]:
    """Seconds to ``ssh_ready``, QEMU's RSS and CPU then, and seconds to the SSH banner of the
    same boot (polled like (b) does): their ratio is the agent's overhead without the noise of
    comparing two different boots."""
    started = time.monotonic()
    await driver.vm_create({"vm_id": vm_id, **SPEC})  # type: ignore[typeddict-item]
    await driver.vm_start(vm_id)
    record = json.loads((data_dir / "vms" / vm_id / "vm.json").read_text())
    banner_at: list[float] = []

    async def watch_banner() -> None:
        while not await wait_for_banner(record["ssh_port"]):
            await asyncio.sleep(0.25)
        banner_at.append(time.monotonic() - started)

    watcher = asyncio.create_task(watch_banner())
    try:
        while time.monotonic() - started < BOOT_LIMIT:
            if (await driver.vm_status(vm_id))["ssh_ready"]:
                elapsed = time.monotonic() - started
                rss, cpu = qemu_cost(qemu.read_pid(data_dir / "vms" / vm_id / "qemu.pid"))
                await asyncio.wait_for(watcher, 5)
                return elapsed, rss, cpu, banner_at[0]
            await asyncio.sleep(0.25)
        raise SystemExit(f"{vm_id} did not become SSH-ready in {BOOT_LIMIT:.0f}s")
    finally:
        watcher.cancel()
        await driver.vm_delete(vm_id)


async def boot_bare(
    work: Path, image_dir: Path, accel: str, node_key: asyncssh.SSHKey, legacy: bool
) -> tuple[float, float, float, float]:
    vm_dir = ensure_private_dir(Path(tempfile.mkdtemp(prefix="bare-", dir=work)))
    files = qemu.VMFiles.under(vm_dir)
    image = qemu.BootImage.load(image_dir, "default")
    port = qemu.PortRegistry().reserve("bare")
    pool = UidPool(*DEFAULT_VM_UID_RANGE, claims_dir=DEFAULT_UID_CLAIMS_DIR)
    uid = pool.claim(files.record)
    started = time.monotonic()
    await qemu.create_overlay(image.rootfs, files.overlay, SPEC["disk_gib"])  # type: ignore[arg-type]
    identity = GuestIdentity.create(vm_dir)
    fds = qemu.open_launch_fds(image, files, identity.host_key_fd())
    command = qemu.qemu_command(
        accel=accel, image=image, fds=fds, vcpus=1, memory_mb=512, ssh_port=port,
        identity=identity, node_key=node_key,
    )  # fmt: skip
    pid: int | None = None
    try:
        if legacy:
            pid = launch_legacy(command, fds, vm_dir)
        else:
            pid = await qemu.launch(
                command, uid=uid, groups=qemu.guest_groups(accel), fds=fds,
                instance_id=identity.instance_id, qmp_socket=files.qmp_socket,
                pidfile=files.pidfile, output=files.launch_log,
            )  # fmt: skip
        fds.close()
        while time.monotonic() - started < BOOT_LIMIT:
            if await wait_for_banner(port):
                elapsed = time.monotonic() - started
                return elapsed, *qemu_cost(pid), elapsed
            await asyncio.sleep(0.25)
        raise SystemExit(f"bare QEMU showed no SSH banner in {BOOT_LIMIT:.0f}s")
    finally:
        fds.close()
        if pid is not None:
            await qemu.kill_qemu(pid, identity.instance_id)
        pool.release(uid, files.record)


def launch_legacy(command: list[str], fds: qemu.LaunchFds, vm_dir: Path) -> int:
    """The command line minus this issue's hardening, run as root like the old agent did."""
    legacy = [arg for arg in command if arg not in ("-nodefaults", "-no-user-config")]
    at = legacy.index("-sandbox")
    del legacy[at : at + 2]
    at = legacy.index("chardev:serial0")
    legacy[at] = f"file:{vm_dir / 'serial.log'}"
    at = legacy.index("ringbuf,id=serial0,size=262144")
    del legacy[at - 1 : at + 1]
    with (vm_dir / "legacy.log").open("wb") as out:
        proc = subprocess.Popen(
            legacy, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            pass_fds=fds.numbers(), start_new_session=True,
        )  # fmt: skip
    return proc.pid


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="boots of each kind (medians)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--legacy", action="store_true", help="also time the pre-isolation QEMU")
    args = parser.parse_args()
    try:
        qemu.BootImage.load(args.image_dir, "default")
    except ImageNotFoundError as exc:
        sys.exit(f"{exc.detail} in {args.image_dir}: run scripts/build-guest-image.sh")

    times: dict[str, list[float]] = {"agent": [], "bare": [], "legacy": []}
    memory: dict[str, list[float]] = {"agent": [], "bare": [], "legacy": []}
    cpu: dict[str, list[float]] = {"agent": [], "bare": [], "legacy": []}
    paired: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pequeroku-bench-") as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(32)
        agent, url = start_agent(work, args.image_dir, args.accel, token)
        try:
            driver = HttpNodeDriver(url, token, timeout=120)
            health = await driver.health()
            if not health.get("guest_isolation"):  # type: ignore[misc]
                sys.exit(f"the agent refuses VMs: {health.get('isolation_detail')}")
            accel = health["accel"]
            node_key = asyncssh.read_private_key(str(work / "data" / "ssh" / "id_ed25519"))
            kinds = ["agent", "bare", *(["legacy"] if args.legacy else [])]
            for run in range(args.runs):
                # Rotate the order: a shared machine's load drifts, and a fixed order would
                # hand the same slot (and bias) to the same kind every run.
                for kind in kinds[run % len(kinds) :] + kinds[: run % len(kinds)]:
                    if kind == "agent":
                        took = await boot_via_agent(driver, f"bench-{run}", work / "data")
                    else:
                        took = await boot_bare(
                            work, args.image_dir, accel, node_key, legacy=kind == "legacy"
                        )
                    times[kind].append(took[0])
                    memory[kind].append(took[1])
                    cpu[kind].append(took[2])
                    extra = ""
                    if kind == "agent":
                        paired.append(took[0] / took[3])
                        extra = f" (its SSH banner at {took[3]:.1f}s)"
                    print(
                        f"run {run + 1}: {kind:6} {took[0]:.1f}s to SSH{extra}, "
                        f"QEMU CPU {took[2]:.1f}s, RSS {took[1]:.0f} MiB",
                        flush=True,
                    )
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        startup = [
            line for line in (work / "agent.log").read_text().splitlines() if "self-test" in line
        ]

    median = {kind: statistics.median(v) for kind, v in times.items() if v}
    fastest = {kind: min(v) for kind, v in times.items() if v}
    print(f"accelerator: {accel}, runs: {args.runs}, cpus: {os.cpu_count()}")
    print(f"agent start-up: {startup[0].split(': ', 1)[-1] if startup else '?'}")
    for kind, label in (
        ("agent", "(a) via agent, create -> SSH ready"),
        ("bare", "(b) bare QEMU, launch -> SSH banner"),
        ("legacy", "(c) pre-isolation QEMU as root -> SSH banner"),
    ):
        if kind in median:
            print(
                f"{label}: median {median[kind]:.1f}s, fastest {fastest[kind]:.1f}s; "
                f"QEMU CPU median {statistics.median(cpu[kind]):.1f}s, "
                f"RSS median {statistics.median(memory[kind]):.0f} MiB"
            )
    ratio = median["agent"] / median["bare"]
    verdict = "met" if ratio <= RATIO_TARGET else "NOT met"
    print(
        f"agent/bare ratio: {ratio:.3f} (overhead {100 * (ratio - 1):+.1f}%; "
        f"target <= {RATIO_TARGET:.2f} {verdict}; medians of {args.runs} interleaved boots each)"
    )
    print(f"agent/bare ratio of the fastest runs: {fastest['agent'] / fastest['bare']:.3f}")
    print(
        f"agent/bare ratio within each agent boot (ssh_ready / SSH banner), median: "
        f"{statistics.median(paired):.3f}"
    )
    if "legacy" in median:
        for name, value in (
            ("median", median["bare"] / median["legacy"]),
            ("fastest", fastest["bare"] / fastest["legacy"]),
            ("QEMU CPU", statistics.median(cpu["bare"]) / statistics.median(cpu["legacy"])),
        ):
            print(f"hardened/legacy ratio ({name}): {value:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
