"""The admin shows each container's idle time and the idle policy."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from internal_config.services import config_set
from vm_manager.models import Container


def test_the_container_list_shows_how_long_each_has_been_idle(
    admin_client, user, node, make_container
):
    make_container(
        user,
        node=node,
        status=Container.Status.RUNNING,
        last_active_at=timezone.now() - timedelta(minutes=17, seconds=5),
    )
    make_container(user, node=node, status=Container.Status.STOPPED, idle_suspended=True)

    response = admin_client.get(reverse("admin:vm_manager_container_changelist"))

    assert response.status_code == 200
    assert b"Idle for" in response.content
    assert b"17 min" in response.content
    assert b"suspended (idle)" in response.content


def test_the_idle_column_costs_no_query_per_row(admin_client, user, node, make_container):
    def listing_queries() -> int:
        with CaptureQueriesContext(connection) as seen:
            admin_client.get(reverse("admin:vm_manager_container_changelist"))
        return len(seen.captured_queries)

    make_container(user, node=node, status=Container.Status.RUNNING)
    one = listing_queries()
    for _ in range(5):
        make_container(user, node=node, status=Container.Status.RUNNING)

    assert listing_queries() == one


def test_a_container_page_shows_the_policy_read_only(admin_client, user, node, make_container):
    config_set("idle_suspend_minutes", "45")
    container = make_container(user, node=node, status=Container.Status.RUNNING)

    page = admin_client.get(reverse("admin:vm_manager_container_change", args=[container.pk]))

    assert page.status_code == 200
    assert b"suspended after 45 min without an API call or open socket" in page.content
    assert b'name="idle_suspended"' not in page.content
    assert b'name="last_active_at"' not in page.content


def test_the_page_says_when_the_policy_is_off(admin_client, user, node, make_container):
    config_set("idle_suspend_minutes", "0")
    container = make_container(user, node=node)

    page = admin_client.get(reverse("admin:vm_manager_container_change", args=[container.pk]))

    assert b"never suspended for idleness" in page.content
