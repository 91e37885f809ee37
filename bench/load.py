"""Load on the production shape: the upstream frontend's traffic, bounded, to 127.0.0.1 only.

    .venv/bin/python bench/load.py [--users 50] [--duration 60] [--consoles 10] [--editors 10]
        [--ai-users 5] [--churn-users 2] [--workers 2] [--nodes 2] [--ramp 20 | --spawn-rate R]
        [--db-pool N]
    .venv/bin/python bench/load.py --soak [--users 500] [--duration 600] [--spawn-rate R]
        [--p99-target 1000] [--login-p99-target 2000]

Starts the production shape (``scripts/prod_shape.py``: Gunicorn + Uvicorn workers, PostgreSQL,
Redis, the reconcile loop, node agents on the shell hypervisor) and the fake OpenAI-compatible
provider (``tests/ai/fake_provider.py``), seeds the users (each with a container when active),
then for ``--duration`` seconds every simulated user:

- logs in (``POST /api/user/login/``, its own address in ``X-Forwarded-For`` as the reverse
  proxy would set it) and polls ``/api/user/me/`` and ``/api/containers/`` every 2 s;
- console users keep a terminal open (``/ws/containers/{pk}/?sid=s1``) and type a command
  every ~5 s, timing the round trip to its output;
- editor users keep ``/ws/fs/{pk}/`` open and save a file every ~5 s (``write_file`` with
  ``prev_rev``), timing the ack and journaling every write (acked or not);
- AI users ask every ~15 s over ``/ws/ai/{pk}/``, timing the first text and the whole turn;
- churn users create, power off, power on and delete containers in a loop.

Sockets that close are reopened after a second (no page reload), each close counted as an error
of its kind. Prints per-route p50/p95/p99, errors by kind, requests/s, socket round trips, the
server's CPU per request, RSS and DB connections over time, then the invariant checks
(``vm_manager.invariants``) once the reconciler has had time to converge. Everything started is
stopped and the database dropped at the end.

Users start one after another, evenly spread over the ramp (in a random order of kinds), as
real traffic ramps up: ``--spawn-rate R`` starts R users a second (the ramp is then users / R
seconds, like Locust's option of that name), ``--ramp S`` spreads them over S seconds.

``--soak``: the long run. Defaults become 500 users (100 consoles, 50 editors, 10 AI users, 5
churning) for 600 s with logins spread over 120 s and a 10 s keep-alive (any of them can still be
given). Requests that start after the ramp are also kept apart (steady state), and the run ends
with a verdict: no error, every route's steady p99 within ``--p99-target`` ms, every login's
(ramp included) within ``--login-p99-target`` ms, the web tier's RSS grown less than 10% from the
end of the warm-up (ramp + 60 s, at most half the run) to the end, and the database connections
never above their bound (web workers x ``DB_POOL_MAX_SIZE`` + the reconciler's pool).

Logins have their own target because a login is expensive on purpose: the password hasher
(PBKDF2-SHA256, 1,000,000 iterations, Django's default) costs about 0.5 s of CPU per login on
this machine's cores, so a login's latency is at least that, and more when logins arrive faster
than the cores can hash them. The spawn rate is what makes the start of a run look like traffic
and not like every user pressing "log in" in the same second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.prod_shape import Shape  # noqa: E402

PASSWORD = "load-password-0123"  # noqa: S105 - throwaway users of a throwaway database
POLL_SECONDS = 2.0
CONSOLE_EVERY = 5.0
EDITOR_EVERY = 5.0
AI_EVERY = 15.0
SOCKET_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 120.0
SOAK = {
    "users": 500,
    "consoles": 100,
    "editors": 50,
    "ai_users": 10,
    "churn_users": 5,
    "duration": 600.0,
    "ramp": 120.0,
    # Above the clients' 2 s poll: the worker's idle timeout (Gunicorn's 2 s) must not race it.
    "keep_alive": 10,
}
LOGIN_ROUTE = "POST /api/user/login/"
SOAK_RSS_GROWTH = 10.0  # percent, from the end of the warm-up to the end of the run
DEFAULT_DB_POOL = 10  # the settings' DB_POOL_MAX_SIZE


# -- what the run records -------------------------------------------------------------------------


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    routes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sockets: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    error_times: list[tuple[float, str]] = field(default_factory=list)
    requests: int = 0
    # Requests started from this moment on (after the ramp) are also kept as the steady state.
    steady_from: float = float("inf")
    steady: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def ok(self, route: str, seconds: float, started: float) -> None:
        """``started``: ``time.monotonic()`` when the request was sent (a request sent during
        the ramp that answers after it belongs to the ramp)."""
        self.routes[route].append(seconds)
        self.requests += 1
        if started >= self.steady_from:
            self.steady[route].append(seconds)

    def fail(self, kind: str) -> None:
        self.errors[kind] += 1
        self.error_times.append((time.monotonic(), kind))


@dataclass
class Journal:
    """What the clients saw, for the invariant checks: AI turns and editor writes."""

    ai: dict[int, Any] = field(default_factory=dict)  # user pk -> invariants.AIJournal
    writes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SimUser:
    index: int
    pk: int
    username: str
    container: int | None = None  # its own running container, when active
    console: bool = False
    editor: bool = False
    ai: bool = False
    churn: bool = False


def route_of(method: str, path: str) -> str:
    return method + " " + re.sub(r"/\d+/", "/{id}/", path)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


# -- setup (synchronous Django, in this process, on the shape's database) -------------------------


def setup_django(shape: Shape) -> None:
    os.environ.update(shape.env())
    os.environ["RECONCILE_IN_BACKGROUND"] = "false"  # the shape's reconcile loop does it
    # The bench's own connections close when it is done with them: only the server's are counted.
    os.environ["DB_POOL_MAX_SIZE"] = "0"
    os.environ["DB_CONN_MAX_AGE"] = "0"
    import django

    django.setup()


def seed(
    args: argparse.Namespace, provider_url: str, provider_key: str, first_active: int = 0
) -> list[SimUser]:
    """The users, their quotas, the AI provider's settings, and a container per active user.

    Users ``first_active`` onwards take the console, editor and AI roles in that order of
    index; the last ``--churn-users`` churn.
    """
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    from internal_config.models import Config
    from vm_manager.models import ContainerType, ResourceQuota
    from vm_manager.services import container_create

    for name, value in {
        "openai_api_url": provider_url,
        "openai_api_key": provider_key,
        "openai_model": "fake-model",
    }.items():
        Config.objects.update_or_create(name=name, defaults={"value": value})
    hashed = make_password(PASSWORD)
    User.objects.bulk_create(
        [User(username=f"load{i}", password=hashed) for i in range(args.users)], batch_size=500
    )
    users = list(User.objects.filter(username__startswith="load").order_by("pk"))
    for user in users:  # the signal that makes quotas does not run on bulk_create
        ResourceQuota.objects.get_or_create(user=user)
    small = ContainerType.objects.get(container_type_name="small")
    ResourceQuota.objects.filter(user__in=users).update(credits=20, ai_use_per_day=100_000)
    for quota in ResourceQuota.objects.filter(user__in=users):
        quota.allowed_types.add(small)
    sims = []
    for index, user in enumerate(users):
        sim = SimUser(index, user.pk, user.username)
        rank = index - first_active
        sim.console = 0 <= rank < args.consoles
        sim.editor = 0 <= rank < args.editors
        sim.ai = 0 <= rank < args.ai_users
        sim.churn = args.users - args.churn_users <= index
        if sim.console or sim.editor or sim.ai:
            sim.container = container_create(user=user, container_type_id=small.pk).pk
        sims.append(sim)
    return sims


def wait_running(container_ids: list[int], timeout: float) -> float:
    from vm_manager.models import Container

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        running = Container.objects.filter(pk__in=container_ids, status="running").count()
        if running == len(container_ids):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"load: containers not running after {timeout:.0f}s")


# -- the simulated frontend -----------------------------------------------------------------------


class Client:
    """One browser: a session cookie, its CSRF token, its own address."""

    def __init__(self, base: str, sim: SimUser, stats: Stats) -> None:
        import httpx

        self.base, self.sim, self.stats = base, sim, stats
        address = f"10.{sim.index // 65536 % 256}.{sim.index // 256 % 256}.{sim.index % 256 + 1}"
        self.headers = {"X-Forwarded-For": address}
        self.http = httpx.AsyncClient(base_url=base, headers=self.headers, timeout=30)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        route = route_of(method, path)
        headers = {}
        if method not in ("GET", "HEAD") and "csrftoken" in self.http.cookies:
            headers["X-CSRFToken"] = self.http.cookies["csrftoken"]
        sent, started = time.monotonic(), time.perf_counter()
        try:
            response = await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.fail(f"{route} {type(exc).__name__}")
            return None
        if response.status_code >= 400:
            self.stats.fail(f"{route} {response.status_code}")
            return None
        self.stats.ok(route, time.perf_counter() - started, sent)
        return response

    async def login(self) -> bool:
        body = {"username": self.sim.username, "password": PASSWORD}
        if await self.request("POST", "/api/user/login/", json=body) is None:
            return False
        await self.request("GET", "/api/user/me/")  # sets the csrftoken cookie
        return True

    def socket_headers(self) -> dict[str, str]:
        cookies = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        return {**self.headers, "Cookie": cookies}

    async def connect(self, path: str) -> Any:
        import websockets

        return await websockets.connect(
            self.base.replace("http://", "ws://") + path,
            origin=self.base,  # type: ignore[arg-type]
            additional_headers=self.socket_headers(),
            open_timeout=SOCKET_TIMEOUT,
            max_size=None,
        )


async def until(deadline: float, seconds: float) -> bool:
    """Sleep ``seconds`` (with jitter) unless the run ends first; False once it has."""
    pause = min(seconds * random.uniform(0.8, 1.2), deadline - time.monotonic())  # noqa: S311
    if pause <= 0:
        return False
    await asyncio.sleep(pause)
    return time.monotonic() < deadline


async def poller(client: Client, deadline: float) -> None:
    await asyncio.sleep(random.uniform(0, POLL_SECONDS))  # noqa: S311
    while time.monotonic() < deadline:
        await asyncio.gather(
            client.request("GET", "/api/user/me/"), client.request("GET", "/api/containers/")
        )
        if not await until(deadline, POLL_SECONDS):
            return


async def _socket_loop(client: Client, deadline: float, kind: str, path: str, session: Any) -> None:
    """Keep one socket open until the deadline, reopening it after a close (no page reload)."""
    import websockets

    while time.monotonic() < deadline:
        try:
            async with await client.connect(path) as ws:
                await session(ws)
        except websockets.exceptions.InvalidStatus as exc:
            client.stats.fail(f"ws {kind} refused {exc.response.status_code}")
        except websockets.exceptions.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else "no close frame"
            client.stats.fail(f"ws {kind} closed {code}")
        except (OSError, TimeoutError) as exc:
            client.stats.fail(f"ws {kind} {type(exc).__name__}")
        else:
            return
        await asyncio.sleep(1.0)


async def console(client: Client, deadline: float) -> None:
    async def session(ws: Any) -> None:
        number = random.randint(0, 10**6)  # noqa: S311
        while await until(deadline, CONSOLE_EVERY):
            number += 1
            marker = f"RT-{number + 1000}"
            started = time.perf_counter()
            await ws.send(f"echo RT-$(({number}+1000))\n")
            seen = ""
            async with asyncio.timeout(SOCKET_TIMEOUT):
                while marker not in seen:
                    frame = await ws.recv()
                    seen = (seen + (frame if isinstance(frame, str) else frame.decode()))[-4096:]
            client.stats.sockets["console command -> output"].append(time.perf_counter() - started)

    path = f"/ws/containers/{client.sim.container}/?sid=s1"
    await _socket_loop(client, deadline, "console", path, session)


async def _editor_call(ws: Any, request: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(request))
    async with asyncio.timeout(SOCKET_TIMEOUT):
        while True:
            event = json.loads(await ws.recv())
            if event.get("req_id") == request["req_id"]:
                return event


async def editor(client: Client, deadline: float, journal: Journal) -> None:
    path = f"/app/load-{client.sim.index}.txt"
    pk = client.sim.container
    counter = iter(range(1, 10**9))

    async def session(ws: Any) -> None:
        async with asyncio.timeout(SOCKET_TIMEOUT):
            while json.loads(await ws.recv()).get("event") != "connected":
                pass
        read = await _editor_call(
            ws, {"action": "read_file", "req_id": f"r{next(counter)}", "path": path}
        )
        rev = (read.get("data") or {}).get("rev", 0)
        while await until(deadline, EDITOR_EVERY):
            content = f"save {next(counter)} by {client.sim.username}\n"
            entry = {"container_id": pk, "path": path, "content": content.encode(), "acked": False}
            journal.writes.append(entry)
            request = {
                "action": "write_file",
                "req_id": f"w{next(counter)}",
                "path": path,
                "content": content,
                "prev_rev": rev,
            }
            started = time.perf_counter()
            reply = await _editor_call(ws, request)
            if reply.get("event") == "ok":
                entry["acked"] = True
                rev = reply.get("rev", rev + 1)
                client.stats.sockets["editor write -> ack"].append(time.perf_counter() - started)
            else:
                client.stats.fail(f"ws editor write {reply.get('error', 'error')}"[:80])
                rev = reply.get("rev", rev)

    await _socket_loop(client, deadline, "editor", f"/ws/fs/{pk}/", session)


async def ai(client: Client, deadline: float, journal: Journal) -> None:
    from vm_manager.invariants import AIJournal

    seen = journal.ai.setdefault(client.sim.pk, AIJournal())

    async def session(ws: Any) -> None:
        async with asyncio.timeout(SOCKET_TIMEOUT):
            while json.loads(await ws.recv()).get("event") != "connected":
                pass
        number = 0
        while await until(deadline, AI_EVERY):
            number += 1
            if number % 6 == 0:  # keep the memory short, as users do
                await ws.send(json.dumps({"text": "/clear"}))
                async with asyncio.timeout(SOCKET_TIMEOUT):
                    while json.loads(await ws.recv()).get("event") != "connected":
                        pass
            started = time.perf_counter()
            seen.asked += 1
            await ws.send(json.dumps({"text": f"question {number}: what does main.py do?"}))
            first = None
            async with asyncio.timeout(SOCKET_TIMEOUT * 2):
                while True:
                    event = json.loads(await ws.recv())
                    if event.get("event") == "text" and first is None:
                        first = time.perf_counter() - started
                    if event.get("event") == "connected":
                        break
            seen.answered += 1
            client.stats.sockets["ai ask -> first text"].append(first or 0.0)
            client.stats.sockets["ai ask -> turn done"].append(time.perf_counter() - started)

    await _socket_loop(client, deadline, "ai", f"/ws/ai/{client.sim.container}/", session)


async def churn(client: Client, deadline: float, type_id: int) -> None:
    while time.monotonic() < deadline:
        body = {"container_type": type_id, "container_name": f"churn {client.sim.index}"}
        created = await client.request("POST", "/api/containers/", json=body)
        if created is None:
            await until(deadline, 2.0)
            continue
        pk = created.json()["id"]
        for step in ("power_off", "power_on"):
            if not await until(deadline, 3.0):
                break
            await client.request("POST", f"/api/containers/{pk}/{step}/")
        await until(deadline + 60, 2.0)
        await client.request("DELETE", f"/api/containers/{pk}/")
        await until(deadline, 2.0)


async def simulate(
    sim: SimUser, start_in: float, base: str, stats: Stats, journal: Journal, args: Any
) -> None:
    client = Client(base, sim, stats)
    try:
        await asyncio.sleep(start_in)
        if not await client.login():
            return
        deadline = args.deadline
        tasks = [poller(client, deadline)]
        if sim.console:
            tasks.append(console(client, deadline))
        if sim.editor:
            tasks.append(editor(client, deadline, journal))
        if sim.ai:
            tasks.append(ai(client, deadline, journal))
        if sim.churn:
            tasks.append(churn(client, deadline, args.type_id))
        await asyncio.gather(*tasks)
    finally:
        await client.http.aclose()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def sampler(shape: Shape, stats: Stats, deadline: float, rows: list[list[float]]) -> None:
    from asgiref.sync import sync_to_async

    last_requests, last_time = 0, time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(min(5.0, max(deadline - time.monotonic(), 0.1)))
        now = time.monotonic()
        rss = shape.rss_mb()
        try:
            connections = await sync_to_async(shape.db_connections)()
        except Exception:  # the database may be the fault under way
            connections = -1
        rate = (stats.requests - last_requests) / max(now - last_time, 1e-6)
        last_requests, last_time = stats.requests, now
        rows.append(
            [now - stats.started, rate, rss["web"], rss["reconciler"], rss["agents"], connections]
        )


def start_times(users: int, ramp: float) -> list[float]:
    """Seconds from the start at which each user starts: one every ramp / users seconds, the
    slots dealt in a random order so that kinds of users mix."""
    slots = [index * ramp / users for index in range(users)]
    random.shuffle(slots)
    return slots


async def run_traffic(
    shape: Shape, sims: list[SimUser], args: Any, stats: Stats, journal: Journal
) -> list[list[float]]:
    rows: list[list[float]] = []
    args.deadline = time.monotonic() + args.duration
    stats.started = time.monotonic()
    stats.steady_from = stats.started + args.ramp
    sample = asyncio.create_task(sampler(shape, stats, args.deadline, rows))
    users = [
        simulate(sim, start_in, shape.url, stats, journal, args)
        for sim, start_in in zip(sims, start_times(len(sims), args.ramp), strict=True)
    ]
    await asyncio.gather(*users)
    await sample
    return rows


# -- invariants, shared with bench/faults.py ------------------------------------------------------


def check_invariants(
    journal: Journal, since: datetime, timeout: float, grace: timedelta = timedelta(0)
) -> tuple[float, list[Any]]:
    """Wait for convergence (up to ``timeout``), then run every checker; (seconds, violations).

    ``grace``: rows changed more recently are not judged yet (traffic that keeps changing
    intents, as churn does, never leaves every row settled).
    """
    from asgiref.sync import async_to_sync
    from django.db import OperationalError, connections

    from vm_manager.drivers import NodeError, get_node_driver
    from vm_manager.invariants import (
        EditorWrite,
        Violation,
        check_acked_writes,
        check_ai_uses,
        check_convergence,
        check_credits,
        check_placement,
        node_listings,
    )
    from vm_manager.models import Container

    started = time.monotonic()
    while True:
        try:
            listings = node_listings()
            violations = check_convergence(listings, grace=grace)
        except OperationalError as exc:  # the database is restarting, or full
            connections.close_all()
            violations = [Violation("convergence", "database", str(exc).splitlines()[0])]
        settled = time.monotonic() - started >= grace.total_seconds()
        if (not violations and settled) or time.monotonic() - started > timeout:
            break
        time.sleep(1.0)
    converged = time.monotonic() - started
    violations += check_placement(listings)
    violations += check_credits()
    violations += check_ai_uses(journal.ai, since)
    # Traffic may still run (bench/faults.py). Acks are taken from before the files are read
    # (a write acked meanwhile may have landed after its file was read), the writes from after
    # (every write that reached a file before it was read is then in the journal: entries are
    # added before the write is sent).
    acked_before = [bool(entry["acked"]) for entry in list(journal.writes)]
    current: dict[tuple[int, str], bytes | None] = {}
    live = {c.pk: c for c in Container.objects.select_related("node").filter(deleted_at=None)}
    for key in {(entry["container_id"], entry["path"]) for entry in list(journal.writes)}:
        container = live.get(key[0])
        if container is None or container.node is None:
            continue
        driver = get_node_driver(container.node)
        try:
            current[key] = async_to_sync(driver.read_file)(container.vm_id, key[1])
        except NodeError:
            current[key] = None
    writes = [
        EditorWrite(**{**entry, "acked": i < len(acked_before) and acked_before[i]})
        for i, entry in enumerate(list(journal.writes))
    ]
    violations += check_acked_writes(writes, current)
    return converged, violations


# -- report ---------------------------------------------------------------------------------------


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}), Python {platform.python_version()}"
    )


def report_latencies(stats: Stats, elapsed: float, *, steady: bool = False) -> None:
    routes = stats.steady if steady else stats.routes
    if steady:
        print("HTTP latencies after the ramp (steady state):")
    print(f"{'route':<40} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  (ms)")
    for route in sorted(routes):
        ms = [s * 1000 for s in routes[route]]
        print(
            f"{route:<40} {len(ms):>6} {percentile(ms, 0.5):>8.1f} {percentile(ms, 0.95):>8.1f} "
            f"{percentile(ms, 0.99):>8.1f} {max(ms):>8.1f}"
        )
    print(f"requests: {stats.requests} in {elapsed:.0f} s = {stats.requests / elapsed:.1f} req/s")
    print(
        f"{'socket round trip':<40} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  (ms)"
    )
    for name in sorted(stats.sockets):
        ms = [s * 1000 for s in stats.sockets[name]]
        print(
            f"{name:<40} {len(ms):>6} {percentile(ms, 0.5):>8.1f} {percentile(ms, 0.95):>8.1f} "
            f"{percentile(ms, 0.99):>8.1f} {max(ms):>8.1f}"
        )
    if stats.errors:
        print(f"errors: {sum(stats.errors.values())}")
        for kind, count in stats.errors.most_common():
            print(f"  {count:>6}  {kind}")
    else:
        print("errors: 0")


def report_timeline(
    rows: list[list[float]], warm_up: float | None = None, every: int = 1
) -> tuple[float | None, float]:
    """Print the samples (every ``every``-th); returns (web RSS growth % after ``warm_up``
    seconds, or after the first 20% of the run; max DB connections)."""
    print(
        f"{'t (s)':>6} {'req/s':>7} {'web MB':>8} {'reconciler MB':>14} {'agents MB':>10} "
        f"{'DB conns':>9}"
    )
    for index, (t, rate, web, rec, agents, conns) in enumerate(rows):
        if index % every == 0 or index == len(rows) - 1:
            print(f"{t:>6.0f} {rate:>7.1f} {web:>8.0f} {rec:>14.0f} {agents:>10.0f} {conns:>9.0f}")
    if not rows:
        return None, 0.0
    start = warm_up if warm_up is not None else rows[0][0] + 0.2 * (rows[-1][0] - rows[0][0])
    warm = [row for row in rows if row[0] >= start]
    growth = None
    if len(warm) >= 2 and warm[0][2]:
        growth = (warm[-1][2] - warm[0][2]) / warm[0][2] * 100
        print(
            f"web RSS after warm-up ({warm[0][0]:.0f} s): {warm[0][2]:.0f} -> {warm[-1][2]:.0f} MB "
            f"({growth:+.1f}%); at the first sample {rows[0][2]:.0f} MB"
        )
    conns = [row[5] for row in rows if row[5] >= 0]
    if conns:
        print(f"DB connections: max {max(conns):.0f}")
    return growth, max(conns, default=0.0)


def soak_verdict(
    stats: Stats,
    growth: float | None,
    max_connections: float,
    connection_bound: int,
    p99_target_ms: float,
    login_p99_target_ms: float,
) -> bool:
    """Print the soak's pass/fail lines; True when every criterion held."""
    checks: list[tuple[str, bool]] = []
    errors = sum(stats.errors.values())
    checks.append((f"errors: {errors} (target 0)", errors == 0))
    worst = max(
        (
            (percentile(v, 0.99) * 1000, r)
            for r, v in stats.steady.items()
            if v and r != LOGIN_ROUTE
        ),
        default=(0.0, "-"),
    )
    checks.append(
        (f"worst steady p99: {worst[0]:.0f} ms ({worst[1]}; target {p99_target_ms:.0f} ms)",
         worst[0] <= p99_target_ms)
    )  # fmt: skip
    logins = [s * 1000 for s in stats.routes.get(LOGIN_ROUTE, [])]
    login_p99 = percentile(logins, 0.99) if logins else 0.0
    checks.append(
        (
            f"login p99: {login_p99:.0f} ms over all {len(logins)} logins, ramp included "
            f"(p50 {percentile(logins, 0.5) if logins else 0.0:.0f} ms; "
            f"target {login_p99_target_ms:.0f} ms)",
            bool(logins) and login_p99 <= login_p99_target_ms,
        )
    )
    checks.append(
        (
            f"web RSS growth after warm-up: "
            f"{'n/a' if growth is None else f'{growth:+.1f}%'} (target < {SOAK_RSS_GROWTH:.0f}%)",
            growth is not None and growth < SOAK_RSS_GROWTH,
        )
    )
    checks.append(
        (
            f"DB connections: max {max_connections:.0f} (bound {connection_bound})",
            max_connections <= connection_bound,
        )
    )
    for text, ok in checks:
        print(f"soak {'ok  ' if ok else 'FAIL'} {text}")
    passed = all(ok for _, ok in checks)
    print(f"soak: {'PASSED' if passed else 'FAILED'}")
    return passed


def report_invariants(converged: float, violations: list[Any], timeout: float) -> None:
    state = f"in {converged:.1f} s" if converged <= timeout else f"NOT within {timeout:.0f} s"
    print(f"converged {state}")
    names = ("placement", "convergence", "credits", "ai_uses", "acked_writes")
    for name in names:
        found = [v for v in violations if v.invariant == name]
        print(f"invariant {name:<13} {'ok' if not found else f'{len(found)} VIOLATIONS'}")
        for violation in found[:10]:
            print(f"    {violation}")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--soak", action="store_true", help="the long run: 500 users, 600 s, and a verdict"
    )
    parser.add_argument(
        "--p99-target", type=float, default=1000.0, help="soak: every route's p99 (ms)"
    )
    parser.add_argument(
        "--db-pool", type=int, help="DB_POOL_MAX_SIZE per process (default: settings', 10)"
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--consoles", type=int, default=10)
    parser.add_argument("--editors", type=int, default=10)
    parser.add_argument("--ai-users", type=int, default=5)
    parser.add_argument("--churn-users", type=int, default=2)
    parser.add_argument("--ramp", type=float, default=20.0, help="logins spread over this many s")
    parser.add_argument(
        "--spawn-rate", type=float, help="users started per second (sets the ramp: users / R)"
    )
    parser.add_argument(
        "--login-p99-target",
        type=float,
        default=2000.0,
        help="soak: p99 of every login, ramp included (ms); a login hashes its password",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument(
        "--machine-services",
        action="store_true",
        help="use the machine's PostgreSQL and Redis instead of private ones (the load may "
        "take every connection of a shared server)",
    )
    parser.add_argument(
        "--db-conn-max-age", type=int, help="DB_CONN_MAX_AGE of the shape (default: settings')"
    )
    parser.add_argument(
        "--keep-alive", type=int, help="Gunicorn --keep-alive seconds (default: Gunicorn's, 2)"
    )
    parser.add_argument("--logs", type=Path, help="keep the shape's logs in this directory")
    args = parser.parse_args(argv)
    if args.soak:  # the soak's sizes, except those given on the command line
        given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        for name, value in SOAK.items():
            if "--" + name.replace("_", "-") not in given:
                setattr(args, name, value)
    if args.spawn_rate is not None:
        if args.spawn_rate <= 0:
            parser.error("--spawn-rate must be positive")
        args.ramp = args.users / args.spawn_rate
    active = max(args.consoles, args.editors, args.ai_users)
    if args.users < 1 or args.duration <= 0 or args.duration > 3600:
        parser.error("--users must be at least 1 and --duration within (0, 3600]")
    if active + args.churn_users > args.users:
        parser.error("consoles/editors/AI users plus churn users must fit in --users")
    return args


def main() -> None:
    args = parse_args()
    # A TERM (a timeout, a CI cancel) unwinds like Ctrl-C: the shape is stopped, nothing leaks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.ai.fake_provider import FakeProvider, TextReply

    provider = FakeProvider().start()
    provider.default_reply = TextReply(
        ["Hello", " from", " the", " fake", " model."], first_token_delay=0.05
    )
    shape = Shape(
        workers=args.workers,
        nodes=args.nodes,
        private_services=not args.machine_services,
        db_conn_max_age=args.db_conn_max_age,
        db_pool_max_size=args.db_pool,
        keep_logs=args.logs,
        keep_alive=args.keep_alive,
    )
    try:
        with shape:
            setup_django(shape)
            run(shape, args, provider)
    finally:
        provider.stop()


def run(shape: Shape, args: argparse.Namespace, provider: Any) -> None:
    from django.db import connections
    from django.utils import timezone

    from vm_manager.models import ContainerType

    since = timezone.now()
    pool = DEFAULT_DB_POOL if args.db_pool is None else args.db_pool
    sims = seed(args, provider.url, provider.api_key)
    args.type_id = ContainerType.objects.get(container_type_name="small").pk
    containers = [s.container for s in sims if s.container is not None]
    took = wait_running(containers, timeout=120)
    connections.close_all()
    print(
        f"load: {args.users} users ({args.consoles} consoles, {args.editors} editors, "
        f"{args.ai_users} AI, {args.churn_users} churn), {args.duration:.0f} s, started over "
        f"{args.ramp:.0f} s ({args.users / max(args.ramp, 1e-9):.2f} users/s); "
        f"{args.workers} web workers, {args.nodes} shell-hypervisor nodes, "
        f"{'machine' if args.machine_services else 'private'} PostgreSQL and Redis, "
        f"DB pool {pool} per process, "
        f"keep-alive {'default' if args.keep_alive is None else args.keep_alive}; "
        f"{len(containers)} containers running after {took:.1f} s"
    )
    print(f"machine: {machine()}")
    stats, journal = Stats(), Journal()
    pids = shape.server_pids()
    cpu_before = {role: cpu_seconds(p) for role, p in pids.items()}
    rows = asyncio.run(run_traffic(shape, sims, args, stats, journal))
    elapsed = time.monotonic() - stats.started
    pids = shape.server_pids()
    cpu = {role: cpu_seconds(p) - cpu_before.get(role, 0.0) for role, p in pids.items()}
    report_latencies(stats, elapsed)
    if args.soak:
        report_latencies(stats, elapsed, steady=True)
    per_request = cpu["web"] / max(stats.requests, 1) * 1000
    print(
        f"server CPU: web {cpu['web']:.1f} s ({per_request:.2f} ms per HTTP request, sockets "
        f"included), reconciler {cpu['reconciler']:.1f} s, agents {cpu['agents']:.1f} s"
    )
    warm_up = min(args.ramp + 60.0, args.duration / 2) if args.soak else None
    growth, max_connections = report_timeline(rows, warm_up, every=6 if args.soak else 1)
    converged, violations = check_invariants(journal, since, CONVERGE_TIMEOUT)
    report_invariants(converged, violations, CONVERGE_TIMEOUT)
    connections.close_all()
    if args.soak:
        # Each web worker and the reconciler has its own pool (0: no pool, no stated bound).
        bound = (args.workers + 1) * pool if pool > 0 else 10**6
        passed = soak_verdict(
            stats, growth, max_connections, bound, args.p99_target, args.login_p99_target
        )
        if violations:
            print("soak: FAILED (invariants)")
        if not passed or violations:
            sys.exit(1)


if __name__ == "__main__":
    main()
