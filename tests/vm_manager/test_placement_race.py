"""Races on PostgreSQL: parallel creates never overfill a node nor pass the per-user cap.

Each thread has its own connection and a barrier releases them together. The node rows are
locked in one order by placement and the quota row by the create service, so exactly the room
(or the cap) is handed out and everyone else gets a clean refusal.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from internal_config.models import Config
from vm_manager.models import Container, ContainerType, ResourceQuota

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PARALLEL = 12


@pytest.fixture
def one_vcpu_type() -> ContainerType:
    # A transactional test flushes the seeded types between tests, so bring our own.
    return ContainerType.objects.get_or_create(
        container_type_name="race", defaults={"memory_mb": 256, "vcpus": 1, "disk_gib": 1}
    )[0]


def allow(user: User, container_type: ContainerType, credits: int = 100) -> None:
    quota = ResourceQuota.objects.get(user=user)
    quota.credits = credits
    quota.save()
    quota.allowed_types.add(container_type)


def race(users: list[User], container_type: ContainerType) -> list[tuple[int, str]]:
    barrier = threading.Barrier(len(users))
    results: list[tuple[int, str]] = []
    failures: list[BaseException] = []

    def create(user: User) -> None:
        try:
            client = APIClient()
            client.force_authenticate(user)
            barrier.wait()
            response = client.post(
                "/api/containers/", {"container_type": container_type.pk}, format="json"
            )
            results.append((response.status_code, response.json().get("code", "")))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return results


def test_parallel_creates_by_different_users_never_overfill_a_node(
    make_user: Callable[..., User], make_node, one_vcpu_type
):
    # One host CPU at ratio 4.0: room for exactly four 1-vCPU containers.
    make_node("one-cpu", capacity_vcpus=1, capacity_mem_mb=1 << 20)
    users = [make_user(f"racer{i}") for i in range(PARALLEL)]
    for user in users:
        allow(user, one_vcpu_type)

    results = race(users, one_vcpu_type)

    assert Counter(status for status, _ in results) == {201: 4, 503: PARALLEL - 4}
    assert {code for status, code in results if status == 503} == {"no_capacity"}
    assert Container.objects.count() == 4


def test_parallel_creates_never_pass_the_per_user_cap(user, make_node, one_vcpu_type):
    make_node("big", capacity_vcpus=1000, capacity_mem_mb=1 << 24)
    Config.objects.update_or_create(name="max_containers_per_user", defaults={"value": "3"})
    allow(user, one_vcpu_type)

    results = race([user] * PARALLEL, one_vcpu_type)

    assert Counter(status for status, _ in results) == {201: 3, 403: PARALLEL - 3}
    assert {code for status, code in results if status == 403} == {"container_limit"}
    assert Container.objects.filter(user=user).count() == 3
