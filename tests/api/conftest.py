"""API fixtures: those shared with security come from ``tests.support.fixtures.api`` (clients,
a running container on the in-memory node, teams); the rest are this directory's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache

from tests.support.fixtures.api import client_for, running_container, team, teammate
from vm_manager.models import Container, Node, Team, TeamMembership
from vm_manager.reconciler import reconcile_requested

# Fixtures defined in tests.support, registered here by name.
__all__ = ["client_for", "running_container", "team", "teammate"]


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def stopped_container(
    user: User, node: Node, make_container: Callable[..., Container]
) -> Container:
    return make_container(user, node=node, name="idle", desired_state="stopped", status="stopped")


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
