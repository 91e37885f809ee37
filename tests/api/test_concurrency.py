"""The credit race on PostgreSQL: parallel creates can never spend more than the quota.

Twenty threads, each with its own database connection, POST /api/containers/ at once (a
barrier releases them together) against a quota with credits for three. The quota row lock
in ``container_create`` serialises the checks: exactly three succeed, the rest get 403, and a
watcher polling the used credits meanwhile never sees more than the quota.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from vm_manager.models import Container, ContainerType, ResourceQuota

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PARALLEL = 20
CREDITS = 3


@pytest.fixture
def one_credit_type() -> ContainerType:
    # A transactional test flushes the seeded types between tests, so bring our own.
    return ContainerType.objects.get_or_create(
        container_type_name="race", defaults={"memory_mb": 256, "vcpus": 1, "disk_gib": 1}
    )[0]


def test_parallel_creates_never_exceed_the_quota(user, make_node, one_credit_type):
    make_node("big", capacity_vcpus=1000, capacity_mem_mb=1 << 24)
    quota = ResourceQuota.objects.get(user=user)
    quota.credits = CREDITS
    quota.save()
    quota.allowed_types.add(one_credit_type)

    barrier = threading.Barrier(PARALLEL)
    results: list[tuple[int, str]] = []
    failures: list[BaseException] = []
    done = threading.Event()
    seen_used: list[int] = []

    def create() -> None:
        try:
            client = APIClient()
            client.force_authenticate(user)
            barrier.wait()
            response = client.post(
                "/api/containers/", {"container_type": one_credit_type.pk}, format="json"
            )
            results.append((response.status_code, response.json().get("code", "")))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    def watch() -> None:
        try:
            while not done.is_set():
                seen_used.append(ResourceQuota.objects.get(pk=quota.pk).calculate_used_credits())
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=create) for _ in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    watcher.join(timeout=30)

    assert not failures, failures
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: CREDITS, 403: PARALLEL - CREDITS}
    assert {code for status, code in results if status == 403} == {"not_enough_credits"}
    assert Container.objects.filter(user=user).count() == CREDITS
    assert quota.calculate_used_credits() == CREDITS
    assert seen_used and max(seen_used) <= CREDITS
