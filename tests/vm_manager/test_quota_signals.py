from django.contrib.auth.models import User

from internal_config.models import Config
from vm_manager.models import Container, ContainerType, ResourceQuota
from vm_manager.reconciler import reconcile_requested


def test_new_user_gets_quota_with_config_defaults_and_public_types(db):
    Config.objects.filter(name="default_credits").update(value="7")
    Config.objects.filter(name="default_ai_use_per_day").update(value="11")
    ContainerType.objects.create(
        container_type_name="gpu",
        vcpus=4,
        memory_mb=8192,
        disk_gib=40,
        credits_cost=6,
        private=True,
    )

    user = User.objects.create_user("carol", password="x")

    quota = ResourceQuota.objects.get(user=user)
    assert quota.credits == 7
    assert quota.ai_use_per_day == 11
    assert quota.active is True
    assert set(quota.allowed_types.values_list("container_type_name", flat=True)) == {
        "small",
        "medium",
        "large",
    }


def test_unparseable_config_default_falls_back_to_spec_default(db):
    Config.objects.filter(name="default_credits").update(value="lots")

    user = User.objects.create_user("dave", password="x")

    assert user.quota.credits == 3


def test_saving_an_existing_user_keeps_the_quota(user):
    quota_pk = user.quota.pk
    user.quota.allowed_types.clear()

    user.first_name = "Alice"
    user.save()

    assert ResourceQuota.objects.get(user=user).pk == quota_pk
    assert user.quota.allowed_types.count() == 0


def test_deactivating_quota_stops_every_container_and_requests_one_reconcile(
    user, make_container, django_capture_on_commit_callbacks
):
    running = make_container(user)
    stopped = make_container(user, desired_state=Container.DesiredState.STOPPED)
    requests = []

    def listen(sender, container_ids, **kwargs):
        requests.append(container_ids)

    reconcile_requested.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            quota = ResourceQuota.objects.get(user=user)
            quota.active = False
            quota.save()
            assert requests == []  # nothing leaves before commit
    finally:
        reconcile_requested.disconnect(listen)

    assert len(callbacks) == 1
    assert requests == [sorted([running.pk, stopped.pk])]
    assert set(Container.objects.values_list("desired_state", flat=True)) == {"stopped"}


def test_saving_an_already_inactive_quota_requests_nothing(
    user, make_container, django_capture_on_commit_callbacks
):
    make_container(user, desired_state=Container.DesiredState.STOPPED)
    ResourceQuota.objects.filter(user=user).update(active=False)

    with django_capture_on_commit_callbacks() as callbacks:
        quota = ResourceQuota.objects.get(user=user)
        quota.credits = 10
        quota.save()

    assert callbacks == []


def test_reactivating_quota_does_not_start_containers(user, make_container):
    container = make_container(user, desired_state=Container.DesiredState.STOPPED)
    ResourceQuota.objects.filter(user=user).update(active=False)

    quota = ResourceQuota.objects.get(user=user)
    quota.active = True
    quota.save()

    container.refresh_from_db()
    assert container.desired_state == "stopped"
