"""API fixtures: a running container on the in-memory node, teams, reconcile requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.test import APIClient

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, Node, Team, TeamMembership
from vm_manager.reconciler import reconcile_requested


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client_for() -> Callable[[User | None], APIClient]:
    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


def start_vm(container: Container) -> Container:
    """Create and boot the container's VM on its in-memory node, as the reconciler would."""
    driver = InMemoryNodeDriver(container.node.name)
    async_to_sync(driver.vm_create)(
        {
            "vm_id": container.vm_id,
            "vcpus": container.vcpus,
            "memory_mb": container.memory_mb,
            "disk_gib": container.disk_gib,
            "image": "default",
        }
    )
    async_to_sync(driver.vm_start)(container.vm_id)
    Container.objects.filter(pk=container.pk).update(status=Container.Status.RUNNING)
    container.refresh_from_db()
    return container


def workspace(container: Container) -> Any:
    """The host folder standing in for the container's /app."""
    return InMemoryNodeDriver.node_state(container.node.name).vms[container.vm_id].workspace


@pytest.fixture
def running_container(
    user: User, node: Node, make_container: Callable[..., Container]
) -> Container:
    return start_vm(make_container(user, node=node, name="web"))


@pytest.fixture
def stopped_container(
    user: User, node: Node, make_container: Callable[..., Container]
) -> Container:
    return make_container(user, node=node, name="idle", desired_state="stopped", status="stopped")


@pytest.fixture
def team(user: User) -> Team:
    return Team.objects.create(name="crew", owner=user)


@pytest.fixture
def teammate(make_user: Callable[..., User], team: Team) -> User:
    mate = make_user("carol")
    TeamMembership.objects.create(team=team, user=mate, active=True)
    return mate


@pytest.fixture
def former_teammate(make_user: Callable[..., User], team: Team) -> User:
    former = make_user("dave")
    TeamMembership.objects.create(team=team, user=former, active=False)
    return former


@pytest.fixture
def reconcile_requests() -> Iterator[list[list[int]]]:
    seen: list[list[int]] = []

    def listen(sender: Any, container_ids: list[int], **kwargs: Any) -> None:
        seen.append(container_ids)

    reconcile_requested.connect(listen)
    yield seen
    reconcile_requested.disconnect(listen)
