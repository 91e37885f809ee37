"""Reconcile claims: short, renewed while a run works, lapsing soon after a run is killed."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from vm_manager import reconciler
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, ContainerType
from vm_manager.reconciler import (
    CLAIM_SECONDS,
    ClaimHeartbeat,
    ReconcileReport,
    _claim,
    _renew,
    reconcile_once,
)


def test_a_claim_lasts_at_most_claim_seconds(user, node, make_container):
    container = make_container(user, node=node)
    now = timezone.now()

    claimed = _claim([container.pk], "run-a", now)

    assert [c.pk for c in claimed] == [container.pk]
    container.refresh_from_db()
    assert container.claimed_until == now + timedelta(seconds=CLAIM_SECONDS)
    assert CLAIM_SECONDS <= 30


def test_renew_pushes_only_this_runs_claims(user, node, make_container):
    mine, theirs = make_container(user, node=node), make_container(user, node=node)
    past = timezone.now() - timedelta(seconds=5)
    Container.objects.filter(pk=mine.pk).update(claim_token="mine", claimed_until=past)
    Container.objects.filter(pk=theirs.pk).update(claim_token="theirs", claimed_until=past)

    assert _renew("mine") == 1

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.claimed_until > timezone.now() + timedelta(seconds=CLAIM_SECONDS - 5)
    assert theirs.claimed_until == past


def test_a_killed_runs_claim_delays_its_container_only_until_it_lapses(
    user, node, make_container, reconcile
):
    container = make_container(user, node=node)
    # What a run killed mid-pass leaves: its claim, never renewed again.
    killed_at = timezone.now()
    Container.objects.filter(pk=container.pk).update(
        claim_token="killed", claimed_until=killed_at + timedelta(seconds=CLAIM_SECONDS)
    )

    report = reconcile()
    assert report.skipped_claimed == 1
    assert Container.objects.get(pk=container.pk).status != "running"

    # CLAIM_SECONDS later (the claim's clock moved back rather than the test waiting).
    Container.objects.filter(pk=container.pk).update(claimed_until=killed_at - timedelta(seconds=1))
    report = reconcile()

    assert report.created == 1
    container.refresh_from_db()
    assert (container.status, container.claim_token, container.claimed_until) == (
        "running",
        "",
        None,
    )


def test_heartbeat_renews_until_stopped() -> None:
    renewed: list[str] = []
    with ClaimHeartbeat("tok", every=0.01, renew=lambda token: renewed.append(token) or 1) as beat:
        deadline = time.monotonic() + 5
        while beat.beats < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(renewed)
    time.sleep(0.05)

    assert count >= 3
    assert len(renewed) == count  # nothing after the run ended
    assert set(renewed) == {"tok"}


def test_heartbeat_survives_a_failed_renewal() -> None:
    calls: list[int] = []

    def renew(_: str) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return 1

    with ClaimHeartbeat("tok", every=0.01, renew=renew) as beat:
        deadline = time.monotonic() + 5
        while beat.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    assert beat.beats >= 2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_slow_node_call_keeps_its_claim_so_an_overlapping_run_does_not_act(
    user, make_node, monkeypatch
):
    """The claim (0.3 s here) is shorter than the node call (1 s): only the heartbeat keeps a
    second run from taking the container and starting its VM again."""
    container_type = ContainerType.objects.get_or_create(
        container_type_name="claims", defaults={"memory_mb": 512, "vcpus": 1, "disk_gib": 1}
    )[0]
    node = make_node("slow")
    InMemoryNodeDriver.set_capacity("slow", vcpus=100, mem_mb=1 << 20)
    container = Container.objects.create(user=user, container_type=container_type, node=node)
    monkeypatch.setattr(reconciler, "CLAIM_SECONDS", 0.3)
    monkeypatch.setattr(reconciler, "CLAIM_RENEW_SECONDS", 0.1)
    slow_start = InMemoryNodeDriver.vm_start
    started = threading.Event()

    async def vm_start(self: Any, vm_id: str) -> Any:
        started.set()
        await asyncio.sleep(1.0)
        return await slow_start(self, vm_id)

    monkeypatch.setattr(InMemoryNodeDriver, "vm_start", vm_start)
    reports: list[ReconcileReport] = []

    def first_run() -> None:
        try:
            reports.append(reconcile_once())
        finally:
            connection.close()

    thread = threading.Thread(target=first_run)
    thread.start()
    assert started.wait(10)
    time.sleep(0.6)  # past the first claim's expiry: only a renewal still holds it
    second = reconcile_once()
    thread.join(timeout=30)

    assert second.skipped_claimed == 1
    assert second.created == 0
    starts = [vm for op, vm in InMemoryNodeDriver.node_state("slow").calls if op == "vm_start"]
    assert starts == [container.vm_id]
    assert reports and reports[0].created == 1
    container.refresh_from_db()
    assert (container.status, container.claim_token) == ("running", "")
