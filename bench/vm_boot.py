"""Boot time through the node agent versus bare QEMU, same image, same hardened launch.

    .venv/bin/python bench/vm_boot.py [--runs N (10)] [--image-dir DIR] [--accel auto|kvm|tcg]
                                      [--legacy] [--levers]

Both sides time the same "ready": the guest answering as itself on its channel (the instance
id, over the virtio-serial port) or an SSH login with the node's key that checks the guest's
pinned host key and one command (reading the instance id) answered, whichever comes first.
(a) agent: ``HttpNodeDriver.vm_create`` + ``vm_start``, then ``vm_status`` every 0.05 s until
    ``ssh_ready`` (the agent's warm-up did that ping, or that login and read);
(b) bare: ``qemu-img create`` of an overlay and the agent's own launch (the VM-uid, sandboxed,
    fd-passing QEMU command line), then the same work by hand: the channel pinged and, at the
    same time, the forwarded port polled for the SSH banner at the agent's warm-up interval,
    then the login and the command;
(c) with ``--legacy``: bare QEMU as the agent ran it before guest isolation (as root, no
    ``-sandbox``/``-nodefaults``, default devices, serial log file), same image and readiness.
The agent runs as root with the guest egress policy in force (it refuses VMs otherwise), so
(a) and (b) both boot guests whose every packet goes through the policy. Prints the agent's
overhead (a/b, target at most 1.10) across interleaved runs (median and fastest); the
hardening's (b/c with --legacy); and each QEMU's CPU time and memory when ready.

``--levers`` instead times bare boots (b) of the boot path one lever at a time, interleaved, on
this image's root disk: q35 with Debian's compressed kernel, its initramfs and systemd (the boot
before these levers), then the uncompressed kernel (PVH), the image's tiny initramfs, its small
init instead of systemd, and the microvm machine; p50/p95 of each and the gain of each step.
One VM at a time. Run it under the heavy lock; it only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from node_agent.channel import GuestChannel  # noqa: E402
from node_agent.config import DEFAULT_IMAGE_DIR, DEFAULT_UID_CLAIMS_DIR, DEFAULT_VM_UID_RANGE  # noqa: E402
from node_agent.errors import ImageNotFoundError  # noqa: E402
from node_agent.guest import INSTANCE_ID_PATH, wait_for_banner  # noqa: E402
from node_agent.identity import GuestIdentity, ensure_private_dir  # noqa: E402
from node_agent.uids import UidPool  # noqa: E402
from node_agent.vms import WARMUP_INTERVAL  # noqa: E402
from vm_manager.drivers.http import HttpNodeDriver  # noqa: E402

SPEC = {"vcpus": 1, "memory_mb": 512, "disk_gib": 4, "image": "default"}
BOOT_LIMIT = 600.0
RATIO_TARGET = 1.10
LEVER_LIMIT = 120.0  # a lever step that hangs is dropped, not waited for
MICROVM_TSC = "tsc_early_khz=2000000"
STATUS_POLL = 0.05  # the bench's own polling of vm_status: small against any boot
# The boot before the levers: Debian's kernel and initramfs as installed, systemd as PID 1.
SYSTEMD_CMDLINE = (
    "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet loglevel=3 systemd.show_status=false "
    "panic=-1 init=/lib/systemd/systemd"
)


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
) -> tuple[float, float, float]:
    """Seconds from create to ``ssh_ready``, and QEMU's RSS and CPU then."""
    started = time.monotonic()
    await driver.vm_create({"vm_id": vm_id, **SPEC})  # type: ignore[typeddict-item]
    await driver.vm_start(vm_id)
    try:
        while time.monotonic() - started < BOOT_LIMIT:
            if (await driver.vm_status(vm_id))["ssh_ready"]:
                elapsed = time.monotonic() - started
                rss, cpu = qemu_cost(qemu.read_pid(data_dir / "vms" / vm_id / "qemu.pid"))
                return elapsed, rss, cpu
            await asyncio.sleep(STATUS_POLL)
        raise SystemExit(f"{vm_id} did not become SSH-ready in {BOOT_LIMIT:.0f}s")
    finally:
        await driver.vm_delete(vm_id)


async def ready_by_hand(
    port: int, node_key: asyncssh.SSHKey, identity: GuestIdentity, channel_socket: Path
) -> None:
    """What the agent's warm-up does, by hand: the guest channel pinged (answered as this VM
    once the guest's daemon runs) and, at the same time, SSH (``ssh_by_hand``): whichever
    answers first, as ``ssh_ready`` flips for either."""
    channel = GuestChannel("bare", channel_socket)

    async def by_channel() -> None:
        while await channel.ping(BOOT_LIMIT) != identity.instance_id:
            await asyncio.sleep(WARMUP_INTERVAL)

    ways = [
        asyncio.create_task(by_channel()),
        asyncio.create_task(ssh_by_hand(port, node_key, identity)),
    ]
    try:
        await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for way in ways:
            way.cancel()
        await asyncio.gather(*ways, return_exceptions=True)
        await channel.close()


async def ssh_by_hand(port: int, node_key: asyncssh.SSHKey, identity: GuestIdentity) -> None:
    """The banner polled at the warm-up's interval, then a login with the node's key against
    the pinned host key, and the instance id read and checked."""
    while not await wait_for_banner(port):
        await asyncio.sleep(WARMUP_INTERVAL)
    while True:
        try:
            async with asyncssh.connect(
                "127.0.0.1", port, username="root", client_keys=[node_key],
                known_hosts=([identity.host_public_key], [], []), agent_path=None,
                connect_timeout=20,
            ) as conn:  # fmt: skip
                result = await conn.run(f"cat {INSTANCE_ID_PATH}", check=False)
        except (OSError, asyncssh.Error, TimeoutError):
            await asyncio.sleep(WARMUP_INTERVAL)
            continue
        if str(result.stdout or "").strip() == identity.instance_id:
            return
        await asyncio.sleep(WARMUP_INTERVAL)


async def boot_bare(
    work: Path,
    image: qemu.BootImage,
    accel: str,
    node_key: asyncssh.SSHKey,
    legacy: bool = False,
    machine: str | None = None,
) -> tuple[float, float, float]:
    """Seconds from overlay creation to ready (``ready_by_hand``), QEMU's RSS and CPU then."""
    vm_dir = ensure_private_dir(Path(tempfile.mkdtemp(prefix="bare-", dir=work)))
    files = qemu.VMFiles.under(vm_dir)
    port = qemu.PortRegistry().reserve("bare")
    pool = UidPool(*DEFAULT_VM_UID_RANGE, claims_dir=DEFAULT_UID_CLAIMS_DIR)
    uid = pool.claim(files.record)
    started = time.monotonic()
    await qemu.create_overlay(image.rootfs, files.overlay, SPEC["disk_gib"])  # type: ignore[arg-type]
    identity = GuestIdentity.create(vm_dir)
    fds = qemu.open_launch_fds(image, files, identity.host_key_fd())
    default_machine = qemu.MACHINE
    qemu.MACHINE = machine or default_machine
    try:
        command = qemu.qemu_command(
            accel=accel, image=image, fds=fds, vcpus=1, memory_mb=512, ssh_port=port,
            identity=identity, node_key=node_key,
        )  # fmt: skip
    finally:
        qemu.MACHINE = default_machine
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
        try:
            await asyncio.wait_for(
                ready_by_hand(port, node_key, identity, files.channel_socket), BOOT_LIMIT
            )
        except TimeoutError:
            raise SystemExit(f"bare QEMU was not ready in {BOOT_LIMIT:.0f}s") from None
        return time.monotonic() - started, *qemu_cost(pid)
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


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return statistics.median(ordered), p95


def lever_images(image: qemu.BootImage) -> list[tuple[str, qemu.BootImage, str]]:
    """(label, boot image, machine) per step, each adding one lever to the previous one."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    initrds = [Path(str(k).replace("vmlinuz-", "initrd.img-")) for k in kernels[-1:]]
    if not kernels or not initrds[0].is_file():
        sys.exit("--levers needs the host's Debian kernel and initramfs in /boot")
    before = qemu.BootImage(image.name, kernels[-1], initrds[0], image.rootfs, SYSTEMD_CMDLINE)
    pvh = qemu.BootImage(image.name, image.kernel, initrds[0], image.rootfs, SYSTEMD_CMDLINE)
    tiny = qemu.BootImage(image.name, image.kernel, image.initrd, image.rootfs, SYSTEMD_CMDLINE)
    # A microvm under TCG finds no clocksource to calibrate the TSC against, even with its PIT
    # on (measured here: the kernel stops at "Unable to calibrate against PIT"): tell it.
    microvm = qemu.BootImage(
        image.name, image.kernel, image.initrd, image.rootfs, f"{image.cmdline} {MICROVM_TSC}"
    )
    return [
        ("q35, bzImage, Debian initramfs, systemd", before, "q35"),
        ("+ uncompressed kernel (PVH)", pvh, "q35"),
        ("+ tiny initramfs", tiny, "q35"),
        ("+ small init, no systemd (the image)", image, "q35"),
        ("+ microvm machine", microvm, "microvm"),
    ]


async def levers(
    args: argparse.Namespace, work: Path, accel: str, node_key: asyncssh.SSHKey
) -> None:
    image = qemu.BootImage.load(args.image_dir, "default")
    if image.kernel.name != "vmlinux":
        sys.exit("--levers needs an image with an uncompressed kernel: rebuild it")
    steps = lever_images(image)
    times: list[list[float]] = [[] for _ in steps]
    failed: set[int] = set()
    for run in range(args.runs):
        order = [index for index in range(len(steps)) if index not in failed]
        order = order[run % len(order) :] + order[: run % len(order)]
        for index in order:
            label, boot, machine = steps[index]
            try:
                took = await asyncio.wait_for(
                    boot_bare(work, boot, accel, node_key, machine=machine), LEVER_LIMIT
                )
            except TimeoutError:
                print(f"run {run + 1}: {label:42s} not ready in {LEVER_LIMIT:.0f}s: dropped")
                failed.add(index)
                continue
            times[index].append(took[0])
            print(f"run {run + 1}: {label:42s} {took[0]:.2f}s to ready", flush=True)
    print(f"accelerator: {accel}, runs: {args.runs}, cpus: {os.cpu_count()}")
    previous = None
    for (label, _, _), values in zip(steps, times, strict=True):
        if not values:
            print(f"{label:42s} never ready")
            continue
        p50, p95 = percentiles(values)
        gain = "" if previous is None else f"  gain {previous - p50:+.2f}s"
        print(f"{label:42s} p50 {p50:6.2f}s  p95 {p95:6.2f}s{gain}")
        previous = p50


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="boots of each kind")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--legacy", action="store_true", help="also time the pre-isolation QEMU")
    parser.add_argument("--levers", action="store_true", help="time each boot lever (bare)")
    args = parser.parse_args()
    try:
        image = qemu.BootImage.load(args.image_dir, "default")
    except ImageNotFoundError as exc:
        sys.exit(f"{exc.detail} in {args.image_dir}: run scripts/build-guest-image.sh")

    times: dict[str, list[float]] = {"agent": [], "bare": [], "legacy": []}
    memory: dict[str, list[float]] = {"agent": [], "bare": [], "legacy": []}
    cpu: dict[str, list[float]] = {"agent": [], "bare": [], "legacy": []}
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
            if args.levers:
                await levers(args, work, accel, node_key)
                return
            kinds = ["agent", "bare", *(["legacy"] if args.legacy else [])]
            for run in range(args.runs):
                # Rotate the order: a shared machine's load drifts, and a fixed order would
                # hand the same slot (and bias) to the same kind every run.
                for kind in kinds[run % len(kinds) :] + kinds[: run % len(kinds)]:
                    if kind == "agent":
                        took = await boot_via_agent(driver, f"bench-{run}", work / "data")
                    else:
                        took = await boot_bare(
                            work, image, accel, node_key, legacy=kind == "legacy"
                        )
                    times[kind].append(took[0])
                    memory[kind].append(took[1])
                    cpu[kind].append(took[2])
                    print(
                        f"run {run + 1}: {kind:6} {took[0]:.2f}s to ready, "
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
        ("agent", "(a) via agent, create -> ssh_ready"),
        ("bare", "(b) bare QEMU, launch -> login + command by hand"),
        ("legacy", "(c) pre-isolation QEMU as root -> login + command"),
    ):
        if kind in median:
            p50, p95 = percentiles(times[kind])
            print(
                f"{label}: p50 {p50:.2f}s, p95 {p95:.2f}s, fastest {fastest[kind]:.2f}s; "
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
    if "legacy" in median:
        for name, value in (
            ("median", median["bare"] / median["legacy"]),
            ("fastest", fastest["bare"] / fastest["legacy"]),
            ("QEMU CPU", statistics.median(cpu["bare"]) / statistics.median(cpu["legacy"])),
        ):
            print(f"hardened/legacy ratio ({name}): {value:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
