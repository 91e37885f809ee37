"""Idle auto-stop: the policy, cheap activity tracking, and resume on use.

A container with no API call and no open console, editor or AI socket for
``idle_suspend_minutes`` (Config; 0 = never) is suspended by the reconciler: it sets
``idle_suspended`` and the node saves the VM's memory. ``desired_state`` stays ``running``, so
the container keeps its credits and its reserved place on the node: resuming it can never be
refused for quota or capacity, and what a user pays for does not depend on how long they
looked away. The status is ``stopped`` with reason ``IDLE_REASON`` while it sleeps.

Activity: ``container_touch`` writes ``last_active_at`` at most once a minute per container
(the caller's row says when it was last written, so a busy container costs no query at all);
an open socket touches on connect and then every ``IDLE_RECHECK_SECONDS`` from its watchdog.

Resume: ``container_wake`` clears the flag and runs the targeted reconcile in the caller
(the resume takes about a second on a node that restores), then waits for ``running``.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from vm_manager.errors import ContainerNotRunning
from vm_manager.models import Container

IDLE_CONFIG = "idle_suspend_minutes"
DEFAULT_IDLE_SUSPEND_MINUTES = 30
TOUCH_EVERY = timedelta(minutes=1)
MIN_IDLE = timedelta(minutes=2)
IDLE_REASON = "suspended while idle"
RESUME_WAIT_SECONDS = 120.0
RESUME_POLL_SECONDS = 0.5


def parse_idle_minutes(raw: str | None) -> int:
    """A Config value as minutes: missing or unreadable is the default; 0 (or less) never."""
    try:
        minutes = int(str(raw).strip()) if raw is not None else DEFAULT_IDLE_SUSPEND_MINUTES
    except ValueError:
        minutes = DEFAULT_IDLE_SUSPEND_MINUTES
    return max(minutes, 0)


def idle_suspend_minutes() -> int:
    """Config ``idle_suspend_minutes``; 0 means never."""
    from internal_config.models import Config

    return parse_idle_minutes(Config.get_config_value(IDLE_CONFIG))


def idle_minutes_subquery() -> Subquery:
    """The Config value as a subquery, so the reconciler reads it with its containers."""
    from internal_config.models import Config

    return Subquery(Config.objects.filter(name=IDLE_CONFIG).values("value")[:1])


def idle_cutoff(now: datetime, minutes: int) -> datetime | None:
    """Containers last active before this are idle; None when the policy is off.

    Never less than ``MIN_IDLE``: an open socket refreshes its mark only about once a
    minute (watchdog period plus ``TOUCH_EVERY``), so a shorter policy could stop a
    container under an open console."""
    if not minutes:
        return None
    return now - max(timedelta(minutes=minutes), MIN_IDLE)


def last_activity(container: Container) -> datetime:
    """The last API call or socket, else when the status last changed (a fresh start)."""
    return container.last_active_at or container.status_changed_at


def container_touch(container: Container, now: datetime | None = None) -> None:
    """Record use of ``container``: at most one UPDATE a minute, none when recent."""
    now = now or timezone.now()
    if container.last_active_at is not None and now - container.last_active_at < TOUCH_EVERY:
        return
    Container.objects.filter(pk=container.pk).filter(
        Q(last_active_at__isnull=True) | Q(last_active_at__lt=now - TOUCH_EVERY)
    ).update(last_active_at=now)
    container.last_active_at = now


def container_request_resume(container: Container) -> bool:
    """Clear ``idle_suspended`` (touching the row) and ask for a reconcile; False when the
    container was not idle-suspended."""
    from vm_manager.services import reconcile_request

    now = timezone.now()
    with transaction.atomic():
        woke = Container.objects.filter(pk=container.pk, idle_suspended=True).update(
            idle_suspended=False, last_active_at=now, reconcile_attempts=0, next_attempt_at=None
        )
        container.idle_suspended, container.last_active_at = False, now
        if woke:
            reconcile_request([container.pk])
    return bool(woke)


def container_wake(container: Container, timeout: float = RESUME_WAIT_SECONDS) -> Container:
    """Touch ``container``; when it sleeps for idleness, resume it now and wait until it runs.

    Returns the row as it is afterwards (``container`` itself when nothing had to happen).
    Raises ``ContainerNotRunning`` when it did not come back within ``timeout``.
    """
    from vm_manager.reconciler import reconcile_once

    if not container.idle_suspended:
        container_touch(container)
        return container
    container_request_resume(container)
    deadline = time.monotonic() + timeout
    reconcile_once([container.pk])
    while True:
        fresh = Container.objects.get(pk=container.pk)
        if fresh.status == Container.Status.RUNNING or (
            fresh.desired_state != Container.DesiredState.RUNNING
        ):
            return fresh
        if fresh.status == Container.Status.ERROR or time.monotonic() >= deadline:
            raise ContainerNotRunning(f"The container did not resume: {fresh.status_reason}")
        time.sleep(RESUME_POLL_SECONDS)
        reconcile_once([container.pk])
