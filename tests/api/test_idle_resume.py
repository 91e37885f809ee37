"""The API and idle auto-stop: a call on a container marks it in use, and a call on an
idle-suspended one resumes it (exec and files wait for it; the status read does not)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from internal_config.services import config_set
from vm_manager.drivers.memory import InMemoryNodeDriver
from vm_manager.models import Container
from vm_manager.reconciler import reconcile_once

S = Container.Status


def idle_suspended(make_container, user, node) -> Container:
    config_set("idle_suspend_minutes", "10")
    container = make_container(user, node=node)
    reconcile_once()
    Container.objects.filter(pk=container.pk).update(
        last_active_at=timezone.now() - timedelta(minutes=11)
    )
    reconcile_once()
    container.refresh_from_db()
    assert (container.status, container.idle_suspended) == (S.STOPPED, True)
    return container


def test_exec_on_an_idle_suspended_container_resumes_it_and_runs(
    api_client, user, node, make_container
):
    container = idle_suspended(make_container, user, node)

    response = api_client.post(
        f"/api/containers/{container.pk}/exec_command/", {"cmd": "echo hi"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["stdout"].strip() == "hi"
    container.refresh_from_db()
    assert (container.status, container.idle_suspended, container.last_boot) == (
        S.RUNNING,
        False,
        "restored",
    )


def test_reading_the_status_asks_for_a_resume_and_shows_the_detail(
    api_client, user, node, make_container, reconcile_requests, django_capture_on_commit_callbacks
):
    container = idle_suspended(make_container, user, node)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.get(f"/api/containers/{container.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["desired_state"]) == ("stopped", "running")
    assert body["suspended"] is True
    assert body["idle_suspended"] is False  # resuming
    assert [container.pk] in reconcile_requests
    reconcile_once([container.pk])
    container.refresh_from_db()
    assert container.status == S.RUNNING


def test_an_api_call_marks_the_container_in_use(api_client, user, node, make_container):
    container = make_container(user, node=node)
    reconcile_once()

    api_client.post(f"/api/containers/{container.pk}/exec_command/", {"cmd": "true"}, format="json")

    container.refresh_from_db()
    assert container.last_active_at is not None
    assert (
        InMemoryNodeDriver.node_state(node.name).calls.count(("vm_suspend", container.vm_id)) == 0
    )
