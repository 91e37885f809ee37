from datetime import timedelta

import pytest
from django.utils import timezone

from internal_config.models import AuditLog
from vm_manager import services
from vm_manager.errors import (
    ContainerTypeNotAllowed,
    InvalidStatusTransition,
    NoNodeAvailable,
    NotEnoughCredits,
    QuotaInactive,
    UnknownContainerType,
)
from vm_manager.models import Container, ContainerType
from vm_manager.reconciler import reconcile_requested
from vm_manager.states import ALLOWED_TRANSITIONS


@pytest.fixture
def reconcile_requests():
    seen: list[list[int]] = []

    def listen(sender, container_ids, **kwargs):
        seen.append(container_ids)

    reconcile_requested.connect(listen)
    yield seen
    reconcile_requested.disconnect(listen)


def test_creating_a_container_places_it_and_requests_reconcile(
    user, node, container_type, reconcile_requests, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        container = services.container_create(user=user, container_type_id=container_type.pk)

    assert container.node == node
    assert container.desired_state == "running"
    assert container.status == "created"
    assert reconcile_requests == [[container.pk]]


def test_creating_places_on_the_best_scoring_node(user, make_node, container_type):
    make_node("small-node", capacity_mem_mb=2048)
    roomy = make_node("roomy-node", capacity_mem_mb=32768)

    container = services.container_create(user=user, container_type_id=container_type.pk)

    assert container.node == roomy


def test_creating_with_an_unknown_type_is_rejected(user, node):
    with pytest.raises(UnknownContainerType):
        services.container_create(user=user, container_type_id=999_999)


def test_creating_a_disallowed_type_is_rejected(user, node, container_type):
    user.quota.allowed_types.remove(container_type)

    with pytest.raises(ContainerTypeNotAllowed):
        services.container_create(user=user, container_type_id=container_type.pk)


def test_creating_with_inactive_quota_is_rejected(user, node, container_type):
    user.quota.active = False
    user.quota.save()

    with pytest.raises(QuotaInactive):
        services.container_create(user=user, container_type_id=container_type.pk)


def test_creating_beyond_credits_is_rejected_and_creates_nothing(user, node, db):
    large = ContainerType.objects.get(container_type_name="large")

    with pytest.raises(NotEnoughCredits):
        services.container_create(user=user, container_type_id=large.pk)
    assert not Container.objects.exists()


def test_creating_with_no_node_capacity_is_503_and_creates_nothing(user, make_node, container_type):
    make_node("tiny", capacity_mem_mb=512)
    make_node("stale", heartbeat_at=timezone.now() - timezone.timedelta(minutes=10))
    make_node("sick", healthy=False)

    with pytest.raises(NoNodeAvailable) as error:
        services.container_create(user=user, container_type_id=container_type.pk)
    assert error.value.status_code == 503
    assert not Container.objects.exists()


def test_powering_on_a_stopped_container_is_credit_checked(user, make_container, db):
    medium = ContainerType.objects.get(container_type_name="medium")
    make_container(user, container_type=medium)
    stopped = make_container(user, container_type=medium, desired_state="stopped")

    with pytest.raises(NotEnoughCredits):
        services.container_power_on(stopped)
    stopped.refresh_from_db()
    assert stopped.desired_state == "stopped"


def test_powering_on_a_running_container_again_is_a_no_op(user, make_container):
    container = make_container(user)
    user.quota.credits = 0
    user.quota.save()

    assert services.container_power_on(container).desired_state == "running"


def test_powering_off_frees_credits_and_requests_reconcile(
    user, make_container, reconcile_requests, django_capture_on_commit_callbacks
):
    container = make_container(user)

    with django_capture_on_commit_callbacks(execute=True):
        services.container_power_off(container)

    assert user.quota.credits_left() == user.quota.credits
    assert reconcile_requests == [[container.pk]]


def test_powering_on_resets_the_retry_backoff(user, make_container):
    container = make_container(user, desired_state="stopped", reconcile_attempts=4)

    container = services.container_power_on(container)

    assert container.reconcile_attempts == 0


def test_unknown_desired_state_is_rejected(user, make_container):
    with pytest.raises(InvalidStatusTransition):
        services.container_set_desired_state(make_container(user), "exploded")


def test_requesting_delete_marks_the_container_and_stops_it(
    user, make_container, reconcile_requests, django_capture_on_commit_callbacks
):
    container = make_container(user)

    with django_capture_on_commit_callbacks(execute=True):
        services.container_request_delete(container)

    container.refresh_from_db()
    assert container.deleted_at is not None
    assert container.desired_state == "stopped"
    assert reconcile_requests == [[container.pk]]


def _reread(container: Container) -> Container:
    return Container.objects.get(pk=container.pk)


def test_recording_a_status_follows_the_transition_table(user, make_container):
    container = make_container(user)

    assert services.container_record_status(container, "provisioning", "booting")
    assert services.container_record_status(_reread(container), "running")

    container.refresh_from_db()
    assert (container.status, container.status_reason) == ("running", "")


def test_a_start_may_hop_through_provisioning_in_one_write(user, make_container):
    container = make_container(user, status="stopped")

    assert services.container_record_status(container, "running")

    assert _reread(container).status == "running"


def test_a_transition_the_table_forbids_is_recorded_as_error(user, make_container, monkeypatch):
    container = make_container(user)
    monkeypatch.setitem(ALLOWED_TRANSITIONS, "created", frozenset({"error"}))

    assert services.container_record_status(container, "stopped", "odd report")

    container.refresh_from_db()
    assert (container.status, container.status_reason) == ("error", "odd report")


def test_a_stale_unclaimed_status_write_changes_nothing(user, make_container):
    container = make_container(user)
    stale = _reread(container)
    services.container_record_status(container, "error", "VM crashed")

    assert services.container_record_status(stale, "error", "VM crashed") is False
    assert _reread(container).status_reason == "VM crashed"


def test_an_unclaimed_status_write_leaves_a_claimed_row_alone(user, make_container):
    container = make_container(
        user, claim_token="run-a", claimed_until=timezone.now() + timedelta(minutes=5)
    )

    assert services.container_record_status(container, "error", "crash") is False
    assert _reread(container).status == "created"


def test_a_claimed_status_write_lands_only_with_the_claim_token(user, make_container):
    container = make_container(
        user, claim_token="run-a", claimed_until=timezone.now() + timedelta(minutes=5)
    )

    assert services.container_record_status(container, "stopped", claim_token="run-b") is False
    assert services.container_record_status(container, "stopped", claim_token="run-a") is True
    assert _reread(container).status == "stopped"


def test_an_unknown_desired_state_is_rejected(user, make_container):
    container = make_container(user)

    with pytest.raises(InvalidStatusTransition):
        services.container_set_desired_state(container, "paused")


def test_updating_name_and_desired_state_is_one_transaction(user, make_container):
    container = make_container(user, name="before", desired_state="stopped")
    user.quota.credits = 0
    user.quota.save(update_fields=["credits"])

    with pytest.raises(NotEnoughCredits):
        services.container_update(container, name="after", desired_state="running")

    container.refresh_from_db()
    assert (container.name, container.desired_state) == ("before", "stopped")


def test_updating_name_and_desired_state_requests_one_reconcile(
    user, make_container, reconcile_requests, django_capture_on_commit_callbacks
):
    container = make_container(user, name="before")

    with django_capture_on_commit_callbacks(execute=True):
        services.container_update(container, name="after", desired_state="stopped")

    container.refresh_from_db()
    assert (container.name, container.desired_state) == ("after", "stopped")
    assert reconcile_requests == [[container.pk]]


def test_registering_a_node_writes_an_audit_row(db):
    node = services.node_register("n1", url="http://10.0.0.5:8081", token="secret-token")

    row = AuditLog.objects.get(action="node.register")
    assert (row.target_type, row.target_id, row.user) == ("node", str(node.pk), None)
    assert "secret-token" not in row.message
