"""The guest egress policy: what a VM's QEMU may connect to, enforced by nftables on its uid.

Entry points: ``Isolation`` (``start``, ``require``, ``admit``, ``forget``, ``status``,
``watch``), ``base_table``, ``no_egress_table``, ``nameservers``, ``self_test``.

Why this shape (``docs/node-agent.md``, "Guest isolation", has the long form):

- QEMU's user-mode network (slirp) turns every guest connection into an ordinary socket of the
  QEMU process in the agent's network namespace, and maps the gateway 10.0.2.2 (and fec0::2) to
  the node's own loopback. Each VM's QEMU runs under a uid of its own from the VM range
  (``node_agent.uids``), so an output chain matching ``meta skuid`` on that range sees exactly
  the guests' sockets, whatever address the guest used.
- The rules live in the kernel, in the namespace the agent runs in: they stay in force while the
  agent is down (QEMU outlives it), and an agent started inside a network namespace installs
  them there.
- One table per uid range, identical from every agent of the host, so agents starting together
  never fight over it (each install replaces the table in one transaction). ``--guest-egress
  none`` adds a table per agent (named after its data dir) holding that agent's VM uids, so two
  agents in one namespace never decide each other's egress.
- The agent proves the policy at start-up: a process under the range's probe uid must fail to
  connect to listeners on 127.0.0.1 and ::1 and to the agent's own port, and the listeners must
  see nothing. Until that holds the agent refuses to create or start VMs (503), says why in
  ``/health`` and logs one line. A watchdog re-installs the tables if someone flushes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import AgentConfig
from .errors import IsolationUnavailableError
from .procs import communicate
from .uids import GUEST_ENV, UidPool, as_guest

log = logging.getLogger("node_agent.isolation")

DENIED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
DENIED_V6 = ("::1/128", "::/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")
WATCH_INTERVAL = 30.0
NFT_TIMEOUT = 15.0
PROBE_TIMEOUT = 20.0

# Runs under the probe uid. bash and timeout, not Python: the agent's interpreter may live
# where that uid cannot read (a virtualenv or pyenv under /root). One word per target.
_PROBE = r"""
for target in "$@"; do
  if timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' ${target} 2>/dev/null; then
    echo connected
  else
    echo blocked
  fi
done
"""


class IsolationError(Exception):
    """One readable line saying what keeps the policy from being in force."""


@dataclass(frozen=True)
class Nameservers:
    v4: tuple[str, ...]
    v6: tuple[str, ...]


def nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> Nameservers:
    """The resolvers slirp forwards the guest's DNS (10.0.2.3) to: the host's resolv.conf."""
    v4: list[str] = []
    v6: list[str] = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            fields = line.split()
            if len(fields) < 2 or fields[0] != "nameserver":
                continue
            try:
                address = ipaddress.ip_address(fields[1].split("%", 1)[0])
            except ValueError:
                continue
            (v4 if address.version == 4 else v6).append(str(address))
    return Nameservers(tuple(dict.fromkeys(v4)), tuple(dict.fromkeys(v6)))


def base_table_name(low: int, high: int) -> str:
    return f"pequeroku_guests_{low}_{high}"


def no_egress_table_name(agent_id: str) -> str:
    return f"pequeroku_noegress_{agent_id}"


# A TCP reset answers at once (ICMP errors are rate-limited: a refused connect would hang for a
# second), and the guest sees "connection refused".
_DENY_CHAIN = "  chain deny {\n    meta l4proto tcp reject with tcp reset\n    reject\n  }\n"


def _replace(name: str, body: str) -> str:
    # Declaring, deleting and re-declaring in one ``nft -f`` file is one transaction: the old
    # rules stay in force until the new ones are.
    return f"table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{body}}}\n"


def base_table(low: int, high: int, resolvers: Nameservers) -> str:
    """The policy for every uid of the VM range (``--guest-egress public``)."""
    # Matched on the connection's original destination: Docker's embedded resolver
    # (127.0.0.11:53) is DNAT'ed to another port before this chain sees the packet.
    dns = [
        f"ct original {family} daddr {{ {', '.join(servers)} }} "
        "meta l4proto { tcp, udp } ct original proto-dst 53 accept"
        for family, servers in (("ip", resolvers.v4), ("ip6", resolvers.v6))
        if servers
    ]
    rules = [
        "ct state established,related accept",
        *dns,
        "fib daddr type { local, broadcast, multicast, anycast } goto deny",
        f"ip daddr {{ {', '.join(DENIED_V4)} }} goto deny",
        f"ip6 daddr {{ {', '.join(DENIED_V6)} }} goto deny",
    ]
    # A positive match on the range: packets without a socket owner (the kernel's own neighbour
    # discovery, resets, ICMP) never enter the guest chain.
    body = (
        _DENY_CHAIN + "  chain guest {\n" + "".join(f"    {rule}\n" for rule in rules) + "  }\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy accept;\n"
        f"    meta skuid {low}-{high} jump guest\n"
        "  }\n"
    )
    return _replace(base_table_name(low, high), body)


def no_egress_table(agent_id: str, uids: Iterable[int]) -> str:
    """``--guest-egress none``: this agent's VM uids open no new connection at all."""
    elements = sorted(set(uids))
    listed = f"    elements = {{ {', '.join(map(str, elements))} }}\n" if elements else ""
    body = (
        "  set uids {\n    typeof meta skuid\n"
        + listed
        + "  }\n"
        + _DENY_CHAIN
        + "  chain output {\n"
        "    type filter hook output priority filter; policy accept;\n"
        "    meta skuid @uids ct state established,related accept\n"
        "    meta skuid @uids goto deny\n"
        "  }\n"
    )
    return _replace(no_egress_table_name(agent_id), body)


def _drop_table(name: str) -> str:
    return f"table inet {name} {{}}\ndelete table inet {name}\n"


def probe_targets(listen: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Where the agent's own API can be reached from this namespace's loopback or address."""
    targets: list[tuple[str, int]] = []
    for host, port in listen:
        if host in ("", "0.0.0.0"):  # noqa: S104 (an address to test, not to bind)
            targets.append(("127.0.0.1", port))
        elif host == "::":
            targets += [("::1", port), ("127.0.0.1", port)]
        else:
            targets.append((host, port))
    return targets


def _listeners() -> list[socket.socket]:
    opened = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0))
            sock.listen(16)
            sock.setblocking(False)
        except OSError:  # no IPv6 on this host: nothing to reach there either
            sock.close()
            continue
        opened.append(sock)
    return opened


def _accepted_any(listeners: list[socket.socket]) -> bool:
    seen = False
    for sock in listeners:
        with contextlib.suppress(BlockingIOError):
            conn, _ = sock.accept()
            conn.close()
            seen = True
    return seen


async def self_test(probe_uid: int, extra_targets: Iterable[tuple[str, int]]) -> None:
    """Raise ``IsolationError`` unless a probe-uid process reaches none of the node's services."""
    listeners = _listeners()
    try:
        targets = [sock.getsockname()[:2] for sock in listeners] + list(extra_targets)
        try:
            done = await asyncio.to_thread(
                subprocess.run,
                ["/bin/bash", "-c", _PROBE, "probe", *(f"{h} {p}" for h, p in targets)],
                capture_output=True, timeout=PROBE_TIMEOUT, check=False, start_new_session=True,
                **as_guest(probe_uid),
            )  # fmt: skip
        except PermissionError:
            raise IsolationError(
                f"cannot start a process as uid {probe_uid} (the agent needs root, or "
                "CAP_SETUID and CAP_SETGID, to run QEMU under the VM uids)"
            ) from None
        except subprocess.TimeoutExpired:
            raise IsolationError("the self-test probe did not finish") from None
        results = done.stdout.decode(errors="replace").split()
        if len(results) != len(targets):
            tail = done.stderr.decode(errors="replace").strip()[-200:]
            raise IsolationError(f"the self-test probe failed: {tail or done.returncode}")
        reached = [
            f"{host}:{port}"
            for (host, port), result in zip(targets, results, strict=True)
            if result == "connected"
        ]
        if reached or _accepted_any(listeners):
            raise IsolationError(
                "self-test failed: a VM uid reached "
                + (", ".join(reached) or "a loopback listener")
            )
    finally:
        for sock in listeners:
            sock.close()


class Isolation:
    """The policy of one agent: installed and proven at start-up, required before any VM runs."""

    def __init__(self, config: AgentConfig, uids: UidPool) -> None:
        self.config, self.uids = config, uids
        self.mode = config.guest_egress
        self.agent_id = hashlib.sha256(os.fsencode(config.data_dir)).hexdigest()[:12]
        self.enforced = False
        self.detail = "not checked yet"
        self._vm_uids: set[int] = set()
        self._ready: asyncio.Event = asyncio.Event()
        self._lock = asyncio.Lock()

    def status(self) -> dict[str, object]:
        return {
            "guest_isolation": self.enforced,
            "guest_egress": self.mode,
            "isolation_detail": "" if self.enforced else self.detail,
        }

    async def start(self, vm_uids: Iterable[int]) -> None:
        """Install and prove the policy; never raises (the API keeps serving either way)."""
        self._vm_uids = {uid for uid in vm_uids if self.uids.contains(uid)}
        try:
            await self._establish()
        finally:
            self._ready.set()

    async def _establish(self) -> None:
        async with self._lock:
            started = time.monotonic()
            try:
                self._check_preconditions()
                await self._install()
                await self_test(self.uids.probe_uid, probe_targets(self.config.listen))
            except Exception as exc:  # whatever it is, the answer is "not in force"
                detail = str(exc) if isinstance(exc, IsolationError) else f"{exc!r}"
                self.enforced, self.detail = False, detail
                log.error(
                    "guest isolation NOT in force: %s; creating and starting VMs is refused",
                    detail,
                )
                return
            self.enforced, self.detail = True, ""
            log.info(
                "guest isolation in force: egress %s, VM uids %s-%s, self-test passed in %.2fs",
                self.mode, self.uids.low, self.uids.high - 1, time.monotonic() - started,
            )  # fmt: skip

    def _check_preconditions(self) -> None:
        if shutil.which(self.config.nft) is None:
            raise IsolationError(
                f"nftables is not installed ({self.config.nft!r} not found): "
                "apt-get install nftables"
            )
        if os.geteuid() != 0:
            raise IsolationError(
                f"the agent runs as uid {os.geteuid()}: it must run as root to start each VM's "
                "QEMU under an unprivileged uid of its own and to install nftables rules"
            )

    def _ruleset(self) -> str:
        script = base_table(self.uids.low, self.uids.high, nameservers())
        name = no_egress_table_name(self.agent_id)
        if self.mode == "none":
            return script + no_egress_table(self.agent_id, self._vm_uids)
        return script + _drop_table(name)

    async def _install(self) -> None:
        await self._nft(["-f", "-"], self._ruleset())

    async def _nft(self, args: list[str], stdin: str = "") -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.config.nft, *args,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=dict(GUEST_ENV),
            )  # fmt: skip
        except OSError as exc:
            raise IsolationError(f"cannot run {self.config.nft}: {exc.strerror}") from None
        try:
            out, err = await communicate(proc, stdin.encode(), timeout=NFT_TIMEOUT)
        except TimeoutError:
            raise IsolationError(f"{self.config.nft} did not answer") from None
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise IsolationError(f"nft {' '.join(args)} failed: {lines[0] if lines else '?'}")
        return out.decode(errors="replace")

    async def checked(self) -> None:
        """Return once the start-up check is done (its verdict is in ``status``)."""
        await self._ready.wait()

    async def require(self) -> None:
        """Raise ``IsolationUnavailableError`` unless the policy is in force."""
        await self._ready.wait()
        if not self.enforced:
            raise IsolationUnavailableError(
                f"guest isolation is not in force on this node: {self.detail}"
            )

    async def admit(self, uid: int) -> None:
        """Before a VM's QEMU starts: its uid joins the agent's no-egress set (mode none)."""
        await self.require()
        async with self._lock:
            self._vm_uids.add(uid)
            if self.mode != "none":
                return
            table = no_egress_table_name(self.agent_id)
            try:
                await self._nft(["add", "element", "inet", table, "uids", f"{{ {uid} }}"])
            except IsolationError as exc:
                raise IsolationUnavailableError(f"could not apply egress none: {exc}") from None

    async def forget(self, uid: int | None) -> None:
        if uid is None or uid not in self._vm_uids:
            return
        async with self._lock:
            self._vm_uids.discard(uid)
            if self.mode == "none":
                table = no_egress_table_name(self.agent_id)
                with contextlib.suppress(IsolationError):
                    await self._nft(["delete", "element", "inet", table, "uids", f"{{ {uid} }}"])

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Re-install the tables when they disappear (``nft flush ruleset``, a firewall reload)."""
        await self._ready.wait()
        while True:
            await asyncio.sleep(interval)
            if await self._tables_present():
                continue
            log.warning("guest isolation tables are gone (flushed?); installing them again")
            await self._establish()

    async def _tables_present(self) -> bool:
        names = [base_table_name(self.uids.low, self.uids.high)]
        if self.mode == "none":
            names.append(no_egress_table_name(self.agent_id))
        try:
            for name in names:
                await self._nft(["list", "table", "inet", name])
        except IsolationError:
            return False
        return True
