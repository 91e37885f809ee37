"""From inside real guests: the node, the agent, other guests and private networks are out of
reach; the internet is reachable by default and not with ``--guest-egress none``.

Everything runs in network namespaces this module creates, and nothing can leave the machine
even if the policy were broken:

    test (root ns) ── veth 10.213.x.1/30 ─┐
                                           │ 10.213.x.2: the agent's port (8081)
       "node" ns: agent, its two guests, listeners on 127.0.0.1, ::1 and every address
                                           │ 198.51.100.2, default route ↓ (and nowhere else)
       "internet" ns: 198.51.100.1 (the internet listener) and, on its loopback,
       169.254.169.254, 10.77.0.1, 172.16.77.1, 192.168.77.1, 100.64.77.1 ("metadata", "LAN")
       and no route at all.

Two guests boot once for the module; switching egress off restarts only the agent (the guests
keep running, as they do across any agent restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node_agent.qemu import process_uid, read_pid
from tests.support.agents import AgentProcess, boot, kill_vms, spawn_agent

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

VM_A, VM_B = "iso-a", "iso-b"
AGENT_PORT = 8081
LOOPBACK_PORT, WILDCARD_PORT, INTERNET_PORT = 5432, 6379, 8443
INTERNET = "198.51.100.1"
NODE_WAN = "198.51.100.2"
BEYOND = ["169.254.169.254", "10.77.0.1", "172.16.77.1", "192.168.77.1", "100.64.77.1"]

# Accepts on every (host, port) given, answers "hello" and logs "<local address> <peer>" per
# connection; prints "ready" once all are bound.
LISTENER = r"""
import json, selectors, socket, sys
sel = selectors.DefaultSelector()
for host, port in json.loads(sys.argv[1]):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, host != "::")
    sock.bind((host, port))
    sock.listen(64)
    sel.register(sock, selectors.EVENT_READ)
log = open(sys.argv[2], "a", buffering=1)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, peer = key.fileobj.accept()
        log.write(f"{conn.getsockname()[0]} {peer[0]}\n")
        try:
            conn.sendall(b"hello\n")
        except OSError:
            pass
        conn.close()
"""


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class Net:
    node: str
    internet: str
    host_if: str
    node_addr: str
    root: Path
    listeners: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def node_log(self) -> Path:
        return self.root / "node-listener.log"

    @property
    def internet_log(self) -> Path:
        return self.root / "internet-listener.log"

    def seen(self, log: Path) -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    def listen(self, namespace: str, addresses: list[tuple[str, int]], log: Path) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", LISTENER,
             json.dumps(addresses), str(log)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self.listeners.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", f"listener in {namespace} failed"


def require_tools() -> None:
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    reason = ""
    if os.geteuid() != 0:
        reason = "needs root (network namespaces, nftables, VM uids)"
    elif missing:
        reason = f"needs {', '.join(missing)} (scripts/setup.sh installs them)"
    if reason:
        if os.environ.get("PEQUEROKU_REQUIRE_VM"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    require_tools()
    tag = secrets.token_hex(3)
    subnet = f"10.213.{random.randrange(256)}.{4 * random.randrange(64)}"  # noqa: S311
    base = subnet.rsplit(".", 1)
    host_addr, node_addr = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    ns = Net(
        node=f"pqiso-node-{tag}",
        internet=f"pqiso-inet-{tag}",
        host_if=f"pqh-{tag}",
        node_addr=node_addr,
        root=tmp_path_factory.mktemp("isolation"),
    )
    try:
        run("ip", "netns", "add", ns.node)
        run("ip", "netns", "add", ns.internet)
        for name in (ns.node, ns.internet):
            run("ip", "-n", name, "link", "set", "lo", "up")
        run(
            "ip",
            "link",
            "add",
            ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "pqn0",
            "netns",
            ns.node,
        )
        run("ip", "addr", "add", f"{host_addr}/30", "dev", ns.host_if)
        run("ip", "link", "set", ns.host_if, "up")
        run("ip", "-n", ns.node, "addr", "add", f"{node_addr}/30", "dev", "pqn0")
        run("ip", "-n", ns.node, "link", "set", "pqn0", "up")
        run("ip", "-n", ns.node, "link", "add", "pqw0", "type", "veth", "peer", "name", "pqi0",
            "netns", ns.internet)  # fmt: skip
        run("ip", "-n", ns.node, "addr", "add", f"{NODE_WAN}/24", "dev", "pqw0")
        run("ip", "-n", ns.node, "link", "set", "pqw0", "up")
        run("ip", "-n", ns.internet, "addr", "add", f"{INTERNET}/24", "dev", "pqi0")
        run("ip", "-n", ns.internet, "link", "set", "pqi0", "up")
        for address in BEYOND:
            run("ip", "-n", ns.internet, "addr", "add", f"{address}/32", "dev", "lo")
        run("ip", "-n", ns.node, "route", "add", "default", "via", INTERNET)
        ns.listen(
            ns.node,
            [("127.0.0.1", LOOPBACK_PORT), ("::1", LOOPBACK_PORT), ("::", WILDCARD_PORT)],
            ns.node_log,
        )
        ns.listen(ns.internet, [("0.0.0.0", INTERNET_PORT)], ns.internet_log)  # noqa: S104
        yield ns
    finally:
        for proc in ns.listeners:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for name in (ns.node, ns.internet):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True, check=False)


@dataclass
class Node:
    net: Net
    data_dir: Path
    image_dir: Path
    token: str
    agent: AgentProcess

    def start_agent(self, *extra_args: str) -> None:
        self.agent = spawn_agent(
            self.data_dir, self.image_dir, self.token, "auto",
            host=self.net.node_addr, port=AGENT_PORT, extra_args=extra_args,
            wrapper=("ip", "netns", "exec", self.net.node),
        )  # fmt: skip

    def record(self, vm_id: str) -> dict[str, object]:
        return json.loads((self.data_dir / "vms" / vm_id / "vm.json").read_text())


@pytest.fixture(scope="module")
def node(net: Net, guest_image_dir: Path, token: str) -> Iterator[Node]:
    data_dir = net.root / "data"
    agent = spawn_agent(
        data_dir, guest_image_dir, token, "auto", host=net.node_addr, port=AGENT_PORT,
        wrapper=("ip", "netns", "exec", net.node),
    )  # fmt: skip
    node = Node(net, data_dir, guest_image_dir, token, agent)
    try:
        started = time.monotonic()

        async def boot_both() -> None:
            driver = node.agent.driver()
            await asyncio.gather(boot(driver, VM_A), boot(driver, VM_B))

        asyncio.run(boot_both())
        print(f"\ntwo guests SSH-ready in the node namespace: {time.monotonic() - started:.1f}s")  # noqa: T201
        yield node
    finally:
        node.agent.kill(signal.SIGTERM)
        kill_vms(data_dir)


async def attempts(node: Node, vm_id: str, targets: list[tuple[str, int]]) -> dict[str, str]:
    """Connect from inside ``vm_id`` to each target; "open" only if the connection was made."""
    lines = " ".join(f"{host},{port}" for host, port in targets)
    script = (
        f"for t in {lines}; do h=${{t%,*}}; p=${{t#*,}}; "
        'if timeout 4 bash -c \'exec 3<>"/dev/tcp/$0/$1"\' "$h" "$p" 2>/dev/null; '
        'then echo "$h,$p open"; else echo "$h,$p closed"; fi; done'
    )
    result = await node.agent.driver().exec(vm_id, script, timeout=len(targets) * 5 + 10)
    assert result["exit_code"] == 0, result
    return dict(line.split(" ", 1) for line in result["stdout"].splitlines())


async def wait_ipv6(node: Node, vm_id: str) -> None:
    """slirp announces fec0::/64; the guest takes an address from it a few seconds after boot."""
    check = (
        "for i in $(seq 60); do ip -6 route | grep -q default && exit 0; sleep 0.5; done; exit 1"
    )
    result = await node.agent.driver().exec(vm_id, check, timeout=45)
    assert result["exit_code"] == 0, "the guest never got an IPv6 route from slirp"


def out_of_bounds(node: Node) -> list[tuple[str, int]]:
    ssh_port_b = int(node.record(VM_B)["ssh_port"])  # type: ignore[call-overload]
    return [
        ("10.0.2.2", LOOPBACK_PORT),  # slirp's gateway alias: the node's 127.0.0.1
        ("10.0.2.2", WILDCARD_PORT),
        ("10.0.2.2", AGENT_PORT),
        ("10.0.2.2", ssh_port_b),  # the other guest's forwarded sshd
        ("10.0.2.3", LOOPBACK_PORT),  # the DNS alias, on another port
        ("fec0::2", LOOPBACK_PORT),  # IPv6 alias: the node's ::1
        ("fec0::2", WILDCARD_PORT),
        ("fec0::2", ssh_port_b),
        (node.net.node_addr, AGENT_PORT),  # the agent itself, on its own address
        (node.net.node_addr, WILDCARD_PORT),
        (NODE_WAN, WILDCARD_PORT),  # the node's public-side address
        (NODE_WAN, AGENT_PORT),
        (NODE_WAN, ssh_port_b),
        *((address, INTERNET_PORT) for address in BEYOND),  # metadata, LAN, CGNAT
    ]


async def test_vm_processes_run_under_distinct_unprivileged_uids(node):
    uids = {}
    for vm in (VM_A, VM_B):
        pid = read_pid(node.data_dir / "vms" / vm / "qemu.pid")
        assert pid is not None
        uids[vm] = process_uid(pid)
        assert uids[vm] == node.record(vm)["uid"]
    assert len(set(uids.values())) == 2 and 0 not in uids.values()


async def test_a_guest_reaches_neither_the_node_nor_the_agent_nor_other_guests(node):
    await wait_ipv6(node, VM_A)
    targets = out_of_bounds(node)

    results = await attempts(node, VM_A, targets)

    assert {f"{h},{p}": "closed" for h, p in targets} == results
    assert node.net.seen(node.net.node_log) == []
    assert node.net.seen(node.net.internet_log) == []


async def test_the_internet_is_reachable_by_default(node):
    result = await node.agent.driver().exec(
        VM_A, f"exec 3<>/dev/tcp/{INTERNET}/{INTERNET_PORT} && head -n1 <&3", timeout=15
    )

    assert result["stdout"].strip() == "hello", result
    assert [line.split()[0] for line in node.net.seen(node.net.internet_log)] == [INTERNET]


async def test_with_egress_none_the_running_guests_reach_nothing_new(node):
    before = len(node.net.seen(node.net.internet_log))
    node.agent.kill(signal.SIGTERM)
    node.start_agent("--guest-egress", "none")
    health = await node.agent.driver().health()
    assert health["guest_egress"] == "none" and health["guest_isolation"] is True

    results = await attempts(node, VM_B, [(INTERNET, INTERNET_PORT), *out_of_bounds(node)[:6]])

    assert set(results.values()) == {"closed"}, results
    assert len(node.net.seen(node.net.internet_log)) == before
    assert node.net.seen(node.net.node_log) == []
    # The agent's own way in (the SSH forward) still works: these results came through it.
    for vm in (VM_A, VM_B):
        assert (await node.agent.driver().exec(vm, "echo ok"))["stdout"] == "ok\n"
