"""The admin acts through the API's services: credit check, reconcile request, audit row."""

from typing import Any

import pytest
from django.contrib.admin import site
from django.test import RequestFactory
from django.urls import reverse

from internal_config.models import AuditLog
from vm_manager.models import ResourceQuota
from vm_manager.reconciler import reconcile_requested


@pytest.fixture
def reconcile_requests():
    seen: list[list[int]] = []

    def listen(sender, container_ids, **kwargs):
        seen.append(container_ids)

    reconcile_requested.connect(listen)
    yield seen
    reconcile_requested.disconnect(listen)


def change_form(superuser, obj: Any, **changes: Any) -> dict[str, Any]:
    """``obj``'s admin change form as a browser would post it, with ``changes``."""
    request = RequestFactory().get("/")
    request.user = superuser
    form = site._registry[type(obj)].get_form(request, obj)(instance=obj)
    data = {name: form[name].value() for name in form.fields}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def post_action(client, model: str, action: str, pk: int):
    return client.post(
        reverse(f"admin:vm_manager_{model}_changelist"),
        {"action": action, "index": 0, "_selected_action": [pk]},
        follow=True,
    )


def test_admin_power_on_beyond_the_users_credits_is_refused_like_the_api(
    admin_client, user, make_container
):
    container = make_container(user, desired_state="stopped")
    ResourceQuota.objects.filter(user=user).update(credits=0)

    response = post_action(admin_client, "container", "power_on", container.pk)

    assert "This needs 1 credits and you have 0 left." in response.content.decode()
    container.refresh_from_db()
    assert container.desired_state == "stopped"


def test_an_admin_power_action_writes_an_audit_row(admin_client, admin_user, user, make_container):
    container = make_container(user)

    post_action(admin_client, "container", "power_off", container.pk)

    row = AuditLog.objects.get(action="container.power_off")
    assert (row.user, row.target_type, row.target_id) == (
        admin_user,
        "container",
        str(container.pk),
    )
    assert row.success is True
    assert row.metadata == {"via": "admin"}


def test_a_refused_admin_power_on_writes_a_failed_audit_row(admin_client, user, make_container):
    container = make_container(user, desired_state="stopped")
    ResourceQuota.objects.filter(user=user).update(credits=0)

    post_action(admin_client, "container", "power_on", container.pk)

    row = AuditLog.objects.get(action="container.power_on")
    assert row.success is False
    assert row.message.startswith("not_enough_credits:")


def test_editing_desired_state_in_the_admin_form_is_refused_beyond_credits(
    admin_client, superuser, user, make_container
):
    container = make_container(user, desired_state="stopped")
    ResourceQuota.objects.filter(user=user).update(credits=0)

    response = admin_client.post(
        reverse("admin:vm_manager_container_change", args=[container.pk]),
        change_form(superuser, container, desired_state="running"),
    )

    assert response.status_code == 200
    assert "you have 0 left" in response.content.decode()
    container.refresh_from_db()
    assert container.desired_state == "stopped"


def test_editing_desired_state_in_the_admin_form_requests_reconcile_and_audits(
    admin_client,
    superuser,
    user,
    make_container,
    reconcile_requests,
    django_capture_on_commit_callbacks,
):
    container = make_container(user)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:vm_manager_container_change", args=[container.pk]),
            change_form(superuser, container, desired_state="stopped", name="renamed"),
        )

    assert response.status_code == 302
    container.refresh_from_db()
    assert (container.desired_state, container.name) == ("stopped", "renamed")
    assert [container.pk] in reconcile_requests
    assert AuditLog.objects.filter(action="container.power_off", success=True).count() == 1


def test_deactivating_a_quota_in_the_admin_audits_and_stops_its_containers(
    admin_client, user, make_container, reconcile_requests, django_capture_on_commit_callbacks
):
    container = make_container(user)

    with django_capture_on_commit_callbacks(execute=True):
        post_action(admin_client, "resourcequota", "deactivate", user.quota.pk)

    container.refresh_from_db()
    assert container.desired_state == "stopped"
    assert [container.pk] in reconcile_requests
    row = AuditLog.objects.get(action="quota.deactivate")
    assert (row.target_type, row.target_id, row.success) == ("quota", str(user.quota.pk), True)


def test_unticking_active_in_the_quota_form_is_the_deactivate_service(
    admin_client, superuser, user, make_container, django_capture_on_commit_callbacks
):
    container = make_container(user)
    quota = ResourceQuota.objects.get(user=user)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:vm_manager_resourcequota_change", args=[quota.pk]),
            change_form(superuser, quota, active=False),
        )

    assert response.status_code == 302
    container.refresh_from_db()
    assert container.desired_state == "stopped"
    assert AuditLog.objects.filter(action="quota.deactivate", success=True).count() == 1


def test_the_admin_cannot_insert_a_container_past_the_create_service(admin_client, user):
    """Quota, cap, credits and placement live in ``services.container_create``: no bare insert."""
    response = admin_client.get(reverse("admin:vm_manager_container_add"))

    assert response.status_code == 403
