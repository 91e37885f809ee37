"""Drive every container's VM toward its desired_state: ``reconcile_once(...)``.

One pass:
1. read the containers (one query) and their nodes (one query);
2. probe every node once, concurrently: health and ``vm_list`` (no DB transaction open);
3. record node health in one UPDATE and plan each container against what its node reported;
4. claim only the containers that need a node call, with a conditional UPDATE
   (``claimed_until`` in the past), so two overlapping runs never act on the same container.
   A claim is short (``CLAIM_SECONDS``) and a heartbeat thread renews it every
   ``CLAIM_RENEW_SECONDS`` while the run acts on it, so a slow node never loses it and a killed
   run's claims expire at most ``CLAIM_SECONDS`` after the kill: the next pass after that
   converges those containers;
5. act on the claimed containers (re-reading each VM's status first, so a run that lost the
   race to another does nothing twice), then record statuses and audit rows and release.

``request_reconcile(container_ids)`` runs a targeted pass soon after a change
(``ReconcileRequests``: two workers, coalesced per container) and sends ``reconcile_requested``.

A no-op pass is steps 1-3 with no writes but the node heartbeat: its query count does not
depend on the number of containers.

Power-off (desired ``stopped``) suspends the VM when its node can (memory saved, no host RAM
held; the next start resumes it) and hard-stops it otherwise. Idle auto-stop (``vm_manager.idle``):
a running container idle for ``idle_suspend_minutes`` is claimed, flagged ``idle_suspended``
(a conditional UPDATE, so an API call or socket that touched it meanwhile wins) and suspended;
desired_state stays ``running`` and the status becomes ``stopped`` with ``idle.IDLE_REASON``.

Choices: an unreachable node's containers keep their desired state and node, and get status
``error`` with reason ``node unreachable: ...`` (no attempt counted); when the node answers
again the normal rules bring them back. A VM missing or crashed while desired running is an
``error`` with ``reconcile_attempts`` + 1, ``last_error`` and ``next_attempt_at`` with capped
exponential backoff; a later pass (or a targeted one) retries.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from internal_config.audit import audit_log_ws
from vm_manager import services
from vm_manager.drivers import (
    NodeError,
    NodeUnavailable,
    VMNotFound,
    VMSpec,
    VMStatus,
    get_node_driver,
)
from vm_manager.idle import (
    IDLE_REASON,
    idle_cutoff,
    idle_minutes_subquery,
    last_activity,
    parse_idle_minutes,
)
from vm_manager.models import Container, Node
from vm_manager.nodes import NodeProbe, node_apply_health, node_probe
from vm_manager.placement import place_containers

S = Container.Status
D = Container.DesiredState
# One line per node action (JSON fields with LOG_FORMAT=json); never tokens.
logger = logging.getLogger("pequeroku.reconcile")

# A live run renews its claims every CLAIM_RENEW_SECONDS; a dead one's lapse within CLAIM_SECONDS.
CLAIM_SECONDS = 30
CLAIM_RENEW_SECONDS = 10
BACKOFF_BASE_SECONDS = 10
BACKOFF_CAP_SECONDS = 600
PER_NODE_CONCURRENCY = 4
UNREACHABLE = "node unreachable"

# Plan actions.
NOOP = "noop"
STATUS = "status"  # a DB-only status correction
CREATE = "create"  # place if needed, create and start the VM
START = "start"
STOP = "stop"  # suspend when the node can, else hard stop
SUSPEND = "suspend"  # idle auto-stop: the same node call, desired_state stays running
DELETE = "delete"
FAIL = "fail"  # record a crash or a missing VM, schedule a retry
UNPLACEABLE = "unplaceable"


def backoff_seconds(attempts: int) -> int:
    """10 s, 20 s, 40 s ... capped at 10 minutes."""
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS)


@dataclass
class Step:
    container_id: int
    action: str
    status: str = ""
    reason: str = ""

    def describe(self, container: Container) -> str:
        where = container.node.name if container.node_id and container.node else "-"
        text = f"container {container.pk} ({container.vm_id}) on {where}: {self.action}"
        if self.status:
            text += f" -> {self.status}"
        return f"{text} ({self.reason})" if self.reason else text


@dataclass
class Outcome:
    container_id: int
    action: str
    ok: bool
    status: str = ""
    reason: str = ""
    error: str = ""
    node_id: int | None = None
    deleted: bool = False
    # What the node said about the VM's power-off and boot (None: unchanged).
    suspended: bool | None = None
    last_boot: str | None = None


@dataclass
class ReconcileReport:
    examined: int = 0
    started: int = 0
    stopped: int = 0
    suspended_idle: int = 0
    created: int = 0
    deleted: int = 0
    errors: int = 0
    skipped_claimed: int = 0
    seconds: float = 0.0
    plan: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    unhealthy_nodes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"examined={self.examined} started={self.started} stopped={self.stopped} "
            f"created={self.created} deleted={self.deleted} errors={self.errors} "
            f"seconds={self.seconds:.2f}"
        )


def _observed(probe: NodeProbe | None, container: Container) -> VMStatus | None:
    if probe is None or probe.vms is None:
        return None
    return probe.vms.get(container.vm_id)


def plan_container(
    container: Container,
    probe: NodeProbe | None,
    now: datetime,
    targeted: bool,
    idle_before: datetime | None = None,
) -> Step:
    """What one container needs, from its row and what its node reported this pass.

    ``idle_before``: a running container last active before it is suspended (None: never)."""
    pk = container.pk
    if container.node_id is None:
        if container.deleted_at is not None:
            return Step(pk, DELETE, reason="no VM")
        if container.desired_state == D.STOPPED:
            if container.status != S.STOPPED:
                return Step(pk, STATUS, S.STOPPED, "never placed")
            return Step(pk, NOOP)
        return Step(pk, CREATE, S.RUNNING, "not placed yet")
    if probe is None or not probe.reachable:
        reason = f"{UNREACHABLE}: {probe.error if probe else 'not probed'}"[:500]
        if container.status != S.ERROR or not container.status_reason.startswith(UNREACHABLE):
            return Step(pk, STATUS, S.ERROR, reason)
        return Step(pk, NOOP)
    if container.deleted_at is not None:
        return Step(pk, DELETE)
    vm = _observed(probe, container)
    state = vm["state"] if vm else "missing"
    if container.desired_state == D.STOPPED:
        if state in ("running", "error"):
            return Step(pk, STOP, S.STOPPED)
        if container.status != S.STOPPED or container.status_reason:
            return Step(pk, STATUS, S.STOPPED)
        return Step(pk, NOOP)
    if container.idle_suspended:
        if state == "running":
            return Step(pk, SUSPEND, S.STOPPED, IDLE_REASON)
        if state in ("stopped", "missing"):
            if container.status != S.STOPPED or container.status_reason != IDLE_REASON:
                return Step(pk, STATUS, S.STOPPED, IDLE_REASON)
            return Step(pk, NOOP)
    due = targeted or container.next_attempt_at is None or container.next_attempt_at <= now
    if (
        state == "running"
        and idle_before is not None
        and container.status == S.RUNNING
        and last_activity(container) < idle_before
    ):
        return Step(pk, SUSPEND, S.STOPPED, IDLE_REASON)
    if state == "running":
        want = S.RUNNING if vm and vm["ssh_ready"] else S.PROVISIONING
        reason = "" if want == S.RUNNING else "booting"
        if container.status != want or container.status_reason != reason:
            return Step(pk, STATUS, want, reason)
        return Step(pk, NOOP)
    if state == "error" or (state == "missing" and container.status == S.RUNNING):
        detail = (vm["detail"] if vm else "") or ("VM crashed" if vm else "VM missing")
        if container.status != S.ERROR or container.status_reason.startswith(UNREACHABLE):
            return Step(pk, FAIL, S.ERROR, detail)
        if not due:
            return Step(pk, NOOP)
        return Step(pk, START if vm else CREATE, S.RUNNING, f"retry after: {detail}")
    if container.status == S.ERROR and not due:
        return Step(pk, NOOP)
    if state == "missing":
        return Step(pk, CREATE, S.RUNNING)
    return Step(pk, START, S.RUNNING)


def _load_containers(container_ids: list[int] | None) -> list[Container]:
    qs = Container.objects.order_by("pk").only(
        "pk",
        "instance_id",
        "node_id",
        "desired_state",
        "status",
        "status_reason",
        "reconcile_attempts",
        "next_attempt_at",
        "deleted_at",
        "status_changed_at",
        "last_active_at",
        "idle_suspended",
        "vcpus",
        "memory_mb",
        "disk_gib",
        "container_type_id",
    )
    qs = qs.annotate(idle_minutes=idle_minutes_subquery())
    if container_ids is not None:
        qs = qs.filter(pk__in=container_ids)
    return list(qs)


def _claim(ids: list[int], token: str, now: datetime) -> list[Container]:
    """Conditional UPDATE: only rows whose claim is free or expired become ours."""
    if not ids:
        return []
    Container.objects.filter(pk__in=ids).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    ).update(claim_token=token, claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
    return list(
        Container.objects.filter(claim_token=token)
        .select_related("node", "user", "container_type")
        .order_by("pk")
    )


def _release(token: str) -> None:
    Container.objects.filter(claim_token=token).update(claim_token="", claimed_until=None)


def _renew(token: str) -> int:
    """Push this run's claims ``CLAIM_SECONDS`` ahead; returns how many rows it still holds."""
    until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
    return Container.objects.filter(claim_token=token).update(claimed_until=until)


class ClaimHeartbeat:
    """Renews a run's claims every ``every`` seconds on a thread of its own until stopped.

    The thread has its own database connection (closed when it ends); a renewal that fails (the
    database restarting) is logged and tried again at the next beat: the claims then last
    ``CLAIM_SECONDS`` from the previous one."""

    def __init__(
        self, token: str, every: float | None = None, renew: Callable[[str], int] = _renew
    ) -> None:
        self.token = token
        self.every = CLAIM_RENEW_SECONDS if every is None else every
        self.renew = renew
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconcile-claims", daemon=True)

    def __enter__(self) -> ClaimHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    self.renew(self.token)
                    self.beats += 1
                except Exception:
                    logger.warning("reconcile claims not renewed this beat", exc_info=True)
        finally:
            connections.close_all()


def _spec(container: Container) -> VMSpec:
    return VMSpec(
        vm_id=container.vm_id,
        vcpus=container.vcpus,
        memory_mb=container.memory_mb,
        disk_gib=container.disk_gib,
        image=settings.VM_IMAGE,
    )


def _status_of(vm: VMStatus) -> tuple[str, str]:
    if vm["state"] == "running":
        return (S.RUNNING, "") if vm["ssh_ready"] else (S.PROVISIONING, "booting")
    if vm["state"] == "error":
        return S.ERROR, vm["detail"] or "VM crashed"
    return S.STOPPED, ""


async def _act(container: Container, step: Step) -> Outcome:
    """The node calls for one claimed container; never raises."""
    out = Outcome(container.pk, step.action, ok=True, node_id=container.node_id)
    driver = get_node_driver(container.node)  # type: ignore[arg-type]
    vm_id = container.vm_id
    try:
        try:
            current: VMStatus | None = await driver.vm_status(vm_id)
        except VMNotFound:
            current = None
        if step.action == DELETE:
            await driver.vm_delete(vm_id)
            out.deleted = True
            return out
        if step.action in (STOP, SUSPEND):
            if current is not None and current["state"] != "stopped":
                current = await _power_off(driver, vm_id)
                out.suspended = bool(current.get("suspended", False))
            else:
                out.action = STATUS
            out.status, out.reason = S.STOPPED, IDLE_REASON if step.action == SUSPEND else ""
            return out
        if current is None:
            await driver.vm_create(_spec(container))
            current = await driver.vm_start(vm_id)
            out.action = CREATE
        elif current["state"] != "running":
            current = await driver.vm_start(vm_id)
            out.action = START
        else:
            out.action = STATUS
        out.status, out.reason = _status_of(current)
        if out.action in (CREATE, START):
            out.suspended = bool(current.get("suspended", False))
            out.last_boot = current.get("last_boot", "") or ""
        if out.status == S.ERROR:
            out.ok, out.error = False, out.reason
    except (NodeError, OSError, TimeoutError) as exc:
        out.ok = False
        out.error = str(exc)[:1000] or exc.__class__.__name__
        unreachable = isinstance(exc, NodeUnavailable | OSError | TimeoutError)
        out.status = S.ERROR
        out.reason = f"{UNREACHABLE}: {out.error}"[:500] if unreachable else out.error[:500]
    return out


async def _power_off(driver: Any, vm_id: str) -> VMStatus:
    """Suspend (memory saved, resumed by the next start) when the node can, else hard stop.

    A node without the suspend call, or one that refuses it (an old agent answers 404; a
    VM whose state cannot be saved), gets the ACPI stop: files are on the disk either way."""
    suspend = getattr(driver, "vm_suspend", None)
    if suspend is not None:
        try:
            return await suspend(vm_id)
        except NodeUnavailable:
            raise
        except NodeError as exc:
            logger.warning("suspend of %s refused, hard stop instead: %s", vm_id, exc)
    return await driver.vm_stop(vm_id)


async def _act_all(work: list[tuple[Container, Step]]) -> list[Outcome]:
    limits: dict[int | None, asyncio.Semaphore] = defaultdict(
        lambda: asyncio.Semaphore(PER_NODE_CONCURRENCY)
    )

    async def one(container: Container, step: Step) -> Outcome:
        async with limits[container.node_id]:
            return await _act(container, step)

    return list(await asyncio.gather(*(one(c, s) for c, s in work)))


def _write_status(
    container: Container, token: str | None, status: str, reason: str, **extra: Any
) -> bool:
    return services.container_record_status(container, status, reason, claim_token=token, **extra)


def _audit(container: Container, action: str, *, success: bool, message: str) -> None:
    audit_log_ws(
        action=action,
        user=container.user,
        ip=None,
        target_type="container",
        target_id=container.pk,
        success=success,
        message=message[:1000],
    )


AUDIT_ACTIONS = {
    CREATE: "container.create",
    START: "container.power_on",
    STOP: "container.power_off",
    SUSPEND: "container.idle_suspend",
    DELETE: "container.destroy",
}


def _record(container: Container, outcome: Outcome, token: str, report: ReconcileReport) -> None:
    now = timezone.now()
    words = ["delete" if outcome.deleted else outcome.action, outcome.status]
    words.append("ok" if outcome.ok else f"failed: {outcome.error}")
    report.actions.append(
        f"container {container.pk} ({container.vm_id}) on {container.node}: "
        + " ".join(w for w in words if w)
    )
    logger.log(
        logging.INFO if outcome.ok else logging.WARNING,
        "reconcile %s",
        report.actions[-1],
        extra={
            "container_id": container.pk,
            "vm_id": container.vm_id,
            "node": str(container.node) if container.node else None,
            "action": words[0],
            "result_status": outcome.status,
            "ok": outcome.ok,
            "error": outcome.error or None,
        },
    )
    audit_action = AUDIT_ACTIONS.get(outcome.action)
    if outcome.deleted:
        _audit(container, "container.destroy", success=True, message=f"VM {container.vm_id}")
        Container.objects.filter(pk=container.pk, claim_token=token).delete()
        report.deleted += 1
        return
    if outcome.ok:
        extra: dict[str, Any] = {}
        if outcome.status in (S.RUNNING, S.STOPPED):
            extra = {"reconcile_attempts": 0, "next_attempt_at": None}
        if outcome.suspended is not None:
            extra["suspended"] = outcome.suspended
        if outcome.last_boot is not None:
            extra["last_boot"] = outcome.last_boot
        _write_status(container, token, outcome.status, outcome.reason, **extra)
        report.created += outcome.action == CREATE
        report.started += outcome.action == START
        report.stopped += outcome.action == STOP
        report.suspended_idle += outcome.action == SUSPEND
        if audit_action:
            _audit(container, audit_action, success=True, message=f"on {container.node}")
        return
    report.errors += 1
    report.error_messages.append(f"container {container.pk}: {outcome.error}")
    if outcome.reason.startswith(UNREACHABLE):
        _write_status(container, token, S.ERROR, outcome.reason)
    else:
        _fail(container, token, outcome.error, now)
    _audit(
        container,
        audit_action or "container.reconcile",
        success=False,
        message=outcome.error,
    )


def _fail(container: Container, token: str | None, error: str, now: datetime) -> bool:
    attempts = container.reconcile_attempts + 1
    return _write_status(
        container,
        token,
        S.ERROR,
        error,
        reconcile_attempts=attempts,
        last_error=error[:2000],
        next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts)),
    )


def _place(claimed: list[tuple[Container, Step]], token: str) -> None:
    """Give unplaced containers a node through the one placement (capacity reserved across
    the batch, node rows locked while the choices are written)."""
    unplaced = [(c, s) for c, s in claimed if c.node_id is None and s.action == CREATE]
    if not unplaced:
        return
    with transaction.atomic():
        chosen = place_containers([c for c, _ in unplaced])
        nodes = Node.objects.in_bulk([n for n in chosen if n is not None])
        for (container, step), node_id in zip(unplaced, chosen, strict=True):
            if node_id is None:
                step.action = UNPLACEABLE
                reason = "no node has room for it"
                if container.status_reason != reason:
                    _write_status(container, token, container.status, reason)
                continue
            placed = Container.objects.filter(pk=container.pk, node__isnull=True).update(
                node_id=node_id
            )
            if placed:
                container.node = nodes[node_id]
            else:  # placed elsewhere meanwhile: the next pass sees where
                step.action = UNPLACEABLE


def reconcile_once(
    container_ids: Iterable[int] | None = None,
    *,
    dry_run: bool = False,
    heartbeat_only: bool = False,
) -> ReconcileReport:
    """One pass over every container (or ``container_ids``); per-container failures are
    counted in the report, never raised."""
    started_at = time.monotonic()
    report = ReconcileReport()
    ids = sorted(set(container_ids)) if container_ids is not None else None
    targeted = ids is not None
    containers = [] if heartbeat_only else _load_containers(ids)
    node_ids = {c.node_id for c in containers}
    nodes_qs = Node.objects.order_by("pk")
    if targeted and None not in node_ids:
        nodes_qs = nodes_qs.filter(pk__in=node_ids)
    nodes = list(nodes_qs)
    probes = async_to_sync(node_probe)(nodes, with_vms=not heartbeat_only)
    now = timezone.now()
    if not dry_run:
        node_apply_health(nodes, probes, now)
    report.unhealthy_nodes = {n.name: probes[n.pk].error for n in nodes if probes[n.pk].error}
    by_id = {n.pk: n for n in nodes}
    report.examined = len(containers)
    minutes = parse_idle_minutes(containers[0].idle_minutes) if containers else 0  # type: ignore[attr-defined]
    idle_before = idle_cutoff(now, minutes)

    steps: list[tuple[Container, Step]] = []
    for container in containers:
        probe = probes.get(container.node_id) if container.node_id else None
        step = plan_container(container, probe, now, targeted, idle_before)
        if step.action != NOOP:
            container.node = by_id.get(container.node_id) if container.node_id else None
            steps.append((container, step))
    if dry_run:
        report.plan = [step.describe(container) for container, step in steps]
        report.seconds = time.monotonic() - started_at
        return report

    for container, step in steps:
        if step.action == STATUS:
            _write_status(container, None, step.status, step.reason)
        elif step.action == FAIL and _fail(container, None, step.reason, now):
            report.errors += 1
            report.error_messages.append(f"container {container.pk}: {step.reason}")
            _load_user_and_audit(container, step.reason)

    wanted = {c.pk: s for c, s in steps if s.action in (CREATE, START, STOP, SUSPEND, DELETE)}
    if wanted:
        _act_on_claimed(wanted, now, report, idle_before)
    report.seconds = time.monotonic() - started_at
    return report


def _flag_idle(container: Container, token: str, idle_before: datetime | None) -> bool:
    """Mark a claimed container idle-suspended unless it was used since the plan read it."""
    if container.idle_suspended:
        return True
    if idle_before is None:
        return False
    recent = Q(last_active_at__gte=idle_before) | Q(
        last_active_at__isnull=True, status_changed_at__gte=idle_before
    )
    flagged = (
        Container.objects.filter(pk=container.pk, claim_token=token, idle_suspended=False)
        .exclude(recent)
        .update(idle_suspended=True)
    )
    container.idle_suspended = bool(flagged)
    return bool(flagged)


def _act_on_claimed(
    wanted: dict[int, Step],
    now: datetime,
    report: ReconcileReport,
    idle_before: datetime | None = None,
) -> None:
    token = secrets.token_hex(16)
    try:
        with ClaimHeartbeat(token):
            _act_on_claims(wanted, token, now, report, idle_before)
    finally:
        _release(token)


def _act_on_claims(
    wanted: dict[int, Step],
    token: str,
    now: datetime,
    report: ReconcileReport,
    idle_before: datetime | None,
) -> None:
    claimed = _claim(list(wanted), token, now)
    report.skipped_claimed = len(wanted) - len(claimed)
    work = [(c, Step(c.pk, wanted[c.pk].action)) for c in claimed]
    work = [(c, s) for c, s in work if s.action != SUSPEND or _flag_idle(c, token, idle_before)]
    _place(work, token)
    for container, step in work:
        if step.action == DELETE and container.node_id is None:
            with transaction.atomic():
                _record(container, Outcome(container.pk, DELETE, True, deleted=True), token, report)
    work = [
        (c, s)
        for c, s in work
        if s.action != UNPLACEABLE and not (s.action == DELETE and c.node_id is None)
    ]
    outcomes = async_to_sync(_act_all)(work) if work else []
    for (container, _), outcome in zip(work, outcomes, strict=True):
        with transaction.atomic():  # the status and its audit row commit together
            _record(container, outcome, token, report)


def _load_user_and_audit(container: Container, message: str) -> None:
    owner = Container.objects.select_related("user").get(pk=container.pk).user
    audit_log_ws(
        action="container.error",
        user=owner,
        ip=None,
        target_type="container",
        target_id=container.pk,
        success=False,
        message=message[:1000],
    )


# -- reconcile requests ------------------------------------------------------------------------

# Sent with ``container_ids`` for every reconcile request, after the change commits: a hook for
# tests and extensions (the background run below does not depend on it).
reconcile_requested = Signal()

REQUEST_WORKERS = 2


class ReconcileRequests:
    """Targeted reconciles on a small bounded pool, coalesced per container.

    A container already waiting is not queued again; one waiting while a run acts on it stays
    queued until that run ends (the run may have read the row before the new change), then the
    next free worker takes every waiting container in one pass. Workers are daemon threads:
    cron's ``manage.py reconcile`` converges anyway, so a request lost at exit only delays it.
    """

    def __init__(
        self,
        run: Callable[[list[int]], Any] | None = None,
        workers: int = REQUEST_WORKERS,
    ) -> None:
        self._run = run or self._reconcile
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._pending: set[int] = set()
        self._running: set[int] = set()
        self._wake = threading.Condition()

    def submit(self, container_ids: Iterable[int]) -> list[int]:
        """Queue the containers not already waiting; returns those newly queued."""
        with self._wake:
            new = sorted(set(container_ids) - self._pending)
            if new:
                self._pending.update(new)
                self._start_workers()
                self._wake.notify_all()
        return new

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is waiting or running (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def _start_workers(self) -> None:
        while len(self._threads) < self._workers:
            thread = threading.Thread(
                target=self._work, name=f"reconcile-request-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _take(self) -> list[int]:
        with self._wake:
            while not (ready := self._pending - self._running):
                self._wake.wait()
            self._pending -= ready
            self._running |= ready
            return sorted(ready)

    def _work(self) -> None:
        while True:
            ids = self._take()
            try:
                self._run(ids)
            except Exception:
                logger.exception("targeted reconcile of %s failed", ids)
            finally:
                with self._wake:
                    self._running -= set(ids)
                    self._wake.notify_all()

    @staticmethod
    def _reconcile(container_ids: list[int]) -> None:
        try:
            report = reconcile_once(container_ids)
            logger.info("targeted reconcile of %s: %s", container_ids, report.summary())
        finally:
            # This thread's connections would otherwise stay open until the process exits.
            connections.close_all()


_requests = ReconcileRequests()


def reconcile_requests_idle(timeout: float = 30.0) -> bool:
    """Wait until the background requests are done (for tests and orderly shutdowns)."""
    return _requests.wait_idle(timeout)


def request_reconcile(container_ids: Iterable[int]) -> None:
    """Ask for a targeted reconcile now (``services.reconcile_request`` calls it on commit)."""
    ids = sorted(set(container_ids))
    if not ids:
        return
    reconcile_requested.send(sender=None, container_ids=ids)
    if settings.RECONCILE_IN_BACKGROUND:
        _requests.submit(ids)
