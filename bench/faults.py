"""Faults under load, one at a time, each followed by the invariant checks.

    .venv/bin/python bench/faults.py [--users 30] [--faults web,redis,postgres,agent,reconciler]
        [--workers 2] [--nodes 2] [--steady 10]

Starts the production shape with a PostgreSQL cluster and a Redis server of its own on free
ports (``scripts/prod_shape.py --private-services``: the machine's services are never stopped),
plays ``bench/load.py``'s traffic, waits for every simulated user's login, and injects in
turn:

- ``web``: kill -9 one Gunicorn worker (Gunicorn starts another);
- ``redis``: restart Redis (SIGTERM, which saves its data, then start it again on its port);
- ``postgres``: restart PostgreSQL (``pg_ctl stop -m fast``, then start);
- ``agent``: kill -9 a node agent, start it again on its data directory;
- ``reconciler``: kill -9 the reconcile loop just after a burst of new containers (mid-pass),
  start it again.

For each fault it prints: the recovery time (fault -> a probe user's ``/api/user/me/`` and
``/api/containers/`` answer again, 4 times in a row; the probe asks every 0.25 s), the errors
the clients saw from the fault to the check (by kind), how long every container took to reach
its desired state (rows changed in the last 10 s are not judged: churn never stops), and the
five invariants (``vm_manager.invariants``). At the end it counts the ``user.info`` audit rows
against the ``/api/user/me/`` answers the clients received (each answered poll has its row,
once, even those a killed worker had only spooled; polls still in flight when the traffic
stopped may have one too). Everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load import (  # noqa: E402
    LOGIN_ROUTE,
    SOAK,
    Client,
    Journal,
    SimUser,
    Stats,
    machine,
    sampler,
    seed,
    setup_django,
    simulate,
    start_times,
    wait_running,
)
from scripts.prod_shape import Shape  # noqa: E402

FAULTS = ("web", "redis", "postgres", "agent", "reconciler")
PROBE_EVERY = 0.25
HEALTHY_IN_A_ROW = 4
RECOVERY_TIMEOUT = 120.0
GRACE = timedelta(seconds=10)
ME_ROUTE = "GET /api/user/me/"
LOGINS_TIMEOUT = 120.0
AUDIT_SETTLE = 3.0  # > AUDIT_DEFER_SECONDS
# A reconcile pass killed mid-way leaves its claims until they lapse (reconciler.CLAIM_SECONDS).
CONVERGE_TIMEOUT = 120.0
BURST = 40  # enough creates that a pass is still acting when it is killed
BURST_PER_USER = 10


@dataclass
class FaultResult:
    name: str
    injected: str
    recovery: float | None
    errors: Counter[str]
    converged: float
    converge_timeout: float
    violations: list[Any]


def inject(shape: Shape, name: str) -> str:
    """Do the fault (blocking); returns what was done."""
    if name == "web":
        pid = shape.web_worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        return f"kill -9 web worker {pid}"
    if name == "redis":
        if shape.redis is None:
            raise RuntimeError("faults: the shape has no private Redis")
        shape.redis.send_signal(signal.SIGTERM)
        shape.redis.wait(timeout=30)
        shape.start_redis()
        return f"restarted redis on port {shape.redis_port}"
    if name == "postgres":
        shape.stop_postgres("fast")
        shape.start_postgres()
        return f"restarted postgres on port {shape.pg_port} (pg_ctl stop -m fast, start)"
    if name == "agent":
        agent = shape.agents[0]
        assert agent.proc is not None
        agent.proc.kill()
        agent.proc.wait(timeout=10)
        time.sleep(1.0)
        shape.start_agent(agent)
        return f"kill -9 node agent {agent.index} (pid {agent.proc.pid} now), started again"
    if name == "reconciler":
        return _kill_reconciler_mid_pass(shape)
    raise ValueError(name)


def _kill_reconciler_mid_pass(shape: Shape) -> str:
    from django.contrib.auth.models import User
    from django.db import connections
    from django.utils import timezone

    from vm_manager.models import Container, ContainerType, ResourceQuota
    from vm_manager.reconciler import CLAIM_SECONDS
    from vm_manager.services import container_create

    small = ContainerType.objects.get(container_type_name="small")
    created = []
    # Several owners: the per-user container cap (Config max_containers_per_user) is 10.
    for index in range(-(-BURST // BURST_PER_USER)):
        user, _ = User.objects.get_or_create(username=f"faults-burst-{index}")
        ResourceQuota.objects.get_or_create(user=user)
        ResourceQuota.objects.filter(user=user).update(credits=BURST_PER_USER * small.credits_cost)
        ResourceQuota.objects.get(user=user).allowed_types.add(small)
        Container.objects.filter(user=user).delete()
        count = min(BURST_PER_USER, BURST - len(created))
        created += [
            container_create(user=user, container_type_id=small.pk).pk for _ in range(count)
        ]
    connections.close_all()
    assert shape.reconciler is not None
    # The loop wakes every interval: wait until it has claimed one of the burst, then kill it.
    deadline = time.monotonic() + shape.reconcile_interval * 3
    while time.monotonic() < deadline:
        if Container.objects.filter(pk__in=created).exclude(claim_token="").exists():
            break
        time.sleep(0.02)
    pid = shape.reconciler.pid
    shape.reconciler.kill()
    killed_at = time.monotonic()
    shape.reconciler.wait(timeout=10)
    burst = Container.objects.filter(pk__in=created)
    tokens = set(burst.exclude(claim_token="").values_list("claim_token", flat=True))
    claimed = burst.exclude(claim_token="").count()
    running = burst.filter(status=Container.Status.RUNNING).count()
    shape.start_reconciler()
    # How long the dead run's claims held its containers, and until the burst ran.
    lapsed = settled = None
    while time.monotonic() - killed_at < CONVERGE_TIMEOUT and (lapsed is None or settled is None):
        # A claim holds while its claimed_until is ahead; a container the next runs have no
        # reason to act on keeps the dead run's token, lapsed and inert.
        held = burst.filter(claim_token__in=tokens, claimed_until__gt=timezone.now())
        if lapsed is None and not held.exists():
            lapsed = time.monotonic() - killed_at
        if settled is None and burst.filter(status=Container.Status.RUNNING).count() == BURST:
            settled = time.monotonic() - killed_at
        time.sleep(0.2)
    connections.close_all()

    def seconds(value: float | None) -> str:
        return "NOT within 120 s" if value is None else f"{value:.1f} s"

    return (
        f"kill -9 reconciler {pid} mid-pass: of {BURST} new containers {running} running, "
        f"{claimed} left claimed; restarted. The dead run's claims gone {seconds(lapsed)} after "
        f"the kill (CLAIM_SECONDS {CLAIM_SECONDS}), all {BURST} running {seconds(settled)} after it"
    )


async def probe(client: Client, since: float) -> float | None:
    """Seconds from ``since`` until the probe's requests succeed HEALTHY_IN_A_ROW times."""
    in_a_row, first_ok = 0, None
    while time.monotonic() - since < RECOVERY_TIMEOUT:
        me = await client.request("GET", "/api/user/me/")
        listing = await client.request("GET", "/api/containers/") if me is not None else None
        if me is not None and listing is not None:
            if in_a_row == 0:
                first_ok = time.monotonic() - since
            in_a_row += 1
            if in_a_row >= HEALTHY_IN_A_ROW:
                return first_ok
        else:
            in_a_row = 0
        await asyncio.sleep(PROBE_EVERY)
    return None


async def logins_done(stats: Stats, users: int) -> None:
    """Wait (at most ``LOGINS_TIMEOUT``) until every simulated user has logged in: each login
    hashes its password for about 0.5 s of CPU, and a fault injected while they queue measures
    the hashing, not the recovery."""
    started = time.monotonic()
    while time.monotonic() - started < LOGINS_TIMEOUT:
        tried = len(stats.routes[LOGIN_ROUTE]) + sum(
            count for kind, count in stats.errors.items() if kind.startswith(LOGIN_ROUTE)
        )
        if tried >= users:
            break
        await asyncio.sleep(0.25)
    took = time.monotonic() - started
    print(f"logins: {len(stats.routes[LOGIN_ROUTE])} of {users}, waited {took:.1f} s")


async def run_faults(
    shape: Shape,
    names: list[str],
    args: Any,
    stats: Stats,
    journal: Journal,
    probe_user: SimUser,
    probe_stats: Stats,
) -> list[FaultResult]:
    from bench.load import check_invariants

    client = Client(shape.url, probe_user, probe_stats)
    if not await client.login():
        raise RuntimeError("faults: the probe user cannot log in")
    await logins_done(stats, args.users - 1)
    results = []
    since_db = args.since
    for name in names:
        await asyncio.sleep(args.steady)
        started = time.monotonic()
        recovery_task = asyncio.create_task(probe(client, started))
        injected = await asyncio.to_thread(inject, shape, name)
        recovery = await recovery_task
        await asyncio.sleep(args.steady)
        timeout = CONVERGE_TIMEOUT
        converged, violations = await asyncio.to_thread(
            check_invariants, journal, since_db, timeout, GRACE
        )
        errors = Counter(kind for t, kind in stats.error_times if t >= started)
        stats.error_times = [(t, k) for t, k in stats.error_times if t < started]
        results.append(
            FaultResult(name, injected, recovery, errors, converged, timeout, violations)
        )
        report_fault(results[-1])
    await client.http.aclose()
    return results


def report_fault(result: FaultResult) -> None:
    recovery = "NOT within 120 s" if result.recovery is None else f"{result.recovery:.2f} s"
    converged = (
        f"{result.converged:.1f} s"
        if result.converged <= result.converge_timeout
        else f"NOT within {result.converge_timeout:.0f} s"
    )
    print(f"\n== fault {result.name}: {result.injected}")
    print(
        f"recovery (probe answers again): {recovery}; converged after the check began: {converged}"
    )
    total = sum(result.errors.values())
    print(f"client errors from the fault to the check: {total}")
    for kind, count in result.errors.most_common(12):
        print(f"  {count:>6}  {kind}")
    for invariant in ("placement", "convergence", "credits", "ai_uses", "acked_writes"):
        found = [v for v in result.violations if v.invariant == invariant]
        print(f"invariant {invariant:<13} {'ok' if not found else f'{len(found)} VIOLATIONS'}")
        for violation in found[:8]:
            print(f"    {violation}")
    sys.stdout.flush()


async def session(
    shape: Shape, sims: list[SimUser], names: list[str], args: Any
) -> tuple[list[FaultResult], list[list[float]], Stats]:
    stats, journal, probe_stats = Stats(), Journal(), Stats()
    args.deadline = time.monotonic() + 3600
    rows: list[list[float]] = []
    sample = asyncio.create_task(sampler(shape, stats, args.deadline, rows))
    starts = start_times(len(sims) - 1, args.ramp)
    users = [
        asyncio.create_task(simulate(s, start_in, shape.url, stats, journal, args))
        for s, start_in in zip(sims[1:], starts, strict=True)
    ]
    try:
        results = await run_faults(shape, names, args, stats, journal, sims[0], probe_stats)
    finally:
        for task in [*users, sample]:
            task.cancel()
        for task in [*users, sample]:
            with contextlib.suppress(BaseException):
                await task
    args.answered_polls = len(stats.routes[ME_ROUTE]) + len(probe_stats.routes[ME_ROUTE])
    return results, rows, stats


def check_audit_rows(args: Any, in_flight: int) -> bool:
    """Every answered ``/api/user/me/`` has its ``user.info`` row, and none has two."""
    from internal_config.models import AuditLog

    time.sleep(AUDIT_SETTLE)  # the live workers' last batch
    rows = AuditLog.objects.filter(action="user.info", created_at__gte=args.since).count()
    ok = args.answered_polls <= rows <= args.answered_polls + in_flight
    print(
        f"audit user.info rows: {rows} for {args.answered_polls} answered polls (+ at most "
        f"{in_flight} in flight when the traffic stopped): {'ok' if ok else 'VIOLATION'}"
    )
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--consoles", type=int, default=6)
    parser.add_argument("--editors", type=int, default=6)
    parser.add_argument("--ai-users", type=int, default=3)
    parser.add_argument("--churn-users", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--steady", type=float, default=10.0, help="seconds before/after each")
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    names = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAULTS]
    if unknown or not names:
        parser.error(f"--faults takes a comma-separated subset of {','.join(FAULTS)}")
    if max(args.consoles, args.editors, args.ai_users) + args.churn_users + 1 > args.users:
        parser.error("consoles/editors/AI users, churn users and the probe must fit in --users")
    args.names = names
    return args


def main() -> None:
    args = parse_args()
    # A TERM (a timeout, a CI cancel) unwinds like Ctrl-C: the shape is stopped, nothing leaks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.ai.fake_provider import FakeProvider, TextReply

    provider = FakeProvider().start()
    provider.default_reply = TextReply(["Hello", " from", " the", " fake", " model."])
    # The soak's keep-alive: Gunicorn's default (2 s) races the clients' 2 s poll, and the
    # connections it closes under a request were counted as errors of whichever fault ran.
    shape = Shape(
        workers=args.workers,
        nodes=args.nodes,
        private_services=True,
        keep_alive=int(SOAK["keep_alive"]),
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

    args.since = timezone.now()
    # User 0 is the probe (no container, no sockets); the simulated users follow it.
    sims = seed(args, provider.url, provider.api_key, first_active=1)
    args.type_id = ContainerType.objects.get(container_type_name="small").pk
    took = wait_running([s.container for s in sims if s.container], timeout=120)
    connections.close_all()
    print(
        f"faults: {args.users} users ({args.consoles} consoles, {args.editors} editors, "
        f"{args.ai_users} AI, {args.churn_users} churn, 1 probe); {args.workers} web workers, "
        f"{args.nodes} shell-hypervisor nodes, private PostgreSQL and Redis; containers "
        f"running after {took:.1f} s"
    )
    print(f"machine: {machine()}")
    results, rows, stats = asyncio.run(session(shape, sims, args.names, args))
    audit_ok = check_audit_rows(args, in_flight=len(sims))
    print("\n== summary")
    print(f"{'fault':<12} {'recovery':>10} {'converged':>10} {'errors':>7}  invariants")
    for r in results:
        recovery = "-" if r.recovery is None else f"{r.recovery:.2f} s"
        converged = f"{r.converged:.1f} s" if r.converged <= r.converge_timeout else "NO"
        verdict = "ok" if not r.violations else f"{len(r.violations)} violations"
        print(f"{r.name:<12} {recovery:>10} {converged:>10} {sum(r.errors.values()):>7}  {verdict}")
    conns = [row[5] for row in rows if row[5] >= 0]
    if rows:
        print(
            f"web RSS {rows[0][2]:.0f} -> {rows[-1][2]:.0f} MB; DB connections max "
            f"{max(conns) if conns else -1:.0f}; requests {stats.requests}"
        )
    print(f"audit rows of answered polls: {'ok' if audit_ok else 'VIOLATION'}")
    connections.close_all()


if __name__ == "__main__":
    main()
