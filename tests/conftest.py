"""Shared fixtures: users, API clients, a healthy in-memory node, types and containers.

The integration marker: tests marked ``integration`` run only when PEQUEROKU_TEST_POSTGRES
is set (``make test`` sets it for its second pass, against the machine's PostgreSQL and Redis).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container, ContainerType, Node


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PEQUEROKU_TEST_POSTGRES"):
        return
    skip = pytest.mark.skip(reason="integration: set PEQUEROKU_TEST_POSTGRES (make test does)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Throttle and login-failure counters live in the cache; no test inherits another's."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_in_memory_nodes() -> Iterator[None]:
    InMemoryNodeDriver.reset()
    yield
    InMemoryNodeDriver.reset()


@pytest.fixture
def password() -> str:
    return "correct horse battery staple"


@pytest.fixture
def make_user(db: Any, password: str) -> Callable[..., User]:
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, **extra: Any) -> User:
        name = username or f"user{next(counter)}"
        return User.objects.create_user(username=name, password=password, **extra)

    return make


@pytest.fixture
def user(make_user: Callable[..., User]) -> User:
    return make_user("alice")


@pytest.fixture
def other_user(make_user: Callable[..., User]) -> User:
    return make_user("bob")


@pytest.fixture
def superuser(db: Any, password: str) -> User:
    return User.objects.create_superuser("root", "root@example.com", password)


@pytest.fixture
def api_client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def container_type(db: Any) -> ContainerType:
    return ContainerType.objects.get(container_type_name="small")


@pytest.fixture
def make_node(db: Any) -> Callable[..., Node]:
    counter = iter(range(1, 10_000))

    def make(name: str | None = None, **extra: Any) -> Node:
        fields: dict[str, Any] = {
            "address": "127.0.0.1",
            "port": 8081,
            "auth_token": "node-secret-token",
            "capacity_vcpus": 8,
            "capacity_mem_mb": 16384,
            "capacity_disk_mb": 262144,
            "free_disk_mb": 262144,
            "guest_isolation": True,
            "healthy": True,
            "heartbeat_at": timezone.now(),
        }
        fields.update(extra)
        return Node.objects.create(name=name or f"node{next(counter)}", **fields)

    return make


@pytest.fixture
def node(make_node: Callable[..., Node]) -> Node:
    return make_node("node1")


@pytest.fixture
def make_container(db: Any, container_type: ContainerType) -> Callable[..., Container]:
    def make(user: User, **extra: Any) -> Container:
        fields: dict[str, Any] = {"container_type": container_type}
        fields.update(extra)
        return Container.objects.create(user=user, **fields)

    return make


@pytest.fixture
def hasher_calls() -> Iterator[Callable[[], int]]:
    """How many passwords were hashed (checked or dummy-hashed for unknown users) so far."""
    with mock.patch.object(
        MD5PasswordHasher, "encode", autospec=True, side_effect=MD5PasswordHasher.encode
    ) as encode:
        yield lambda: encode.call_count


@pytest.fixture
def staff_with(make_user: Callable[..., User]) -> Callable[..., Client]:
    """A logged-in admin client of a staff member holding exactly ``codenames``."""

    def make(*codenames: str) -> Client:
        staff = make_user(f"staff-{'-'.join(codenames)}", is_staff=True)
        staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
        client = Client()
        client.force_login(staff)
        return client

    return make
