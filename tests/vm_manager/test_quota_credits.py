import pytest

from internal_config.models import AIUsageLog, AuditLog
from vm_manager.models import Container, ContainerType


@pytest.fixture
def medium(db):
    return ContainerType.objects.get(container_type_name="medium")


def test_used_credits_count_running_containers_by_type_cost(user, make_container, medium):
    make_container(user)  # small, 1
    make_container(user, container_type=medium)  # 2

    assert user.quota.calculate_used_credits(user) == 3


def test_stopped_containers_hold_no_credits(user, make_container, medium):
    make_container(user, container_type=medium, desired_state=Container.DesiredState.STOPPED)

    assert user.quota.calculate_used_credits() == 0


def test_legacy_container_without_type_counts_one_credit(user, make_container):
    make_container(user, container_type=None)

    assert user.quota.calculate_used_credits() == 1


def test_containers_being_deleted_hold_no_credits(user, make_container):
    from django.utils import timezone

    make_container(user, deleted_at=timezone.now())

    assert user.quota.calculate_used_credits() == 0


def test_other_users_containers_do_not_count(user, other_user, make_container):
    make_container(other_user)

    assert user.quota.calculate_used_credits() == 0


def test_credits_left_is_credits_minus_used(user, make_container, medium):
    make_container(user, container_type=medium)

    assert user.quota.credits_left() == 1


def test_changing_type_cost_changes_accounting_of_running_containers(user, make_container, medium):
    make_container(user, container_type=medium)
    ContainerType.objects.filter(pk=medium.pk).update(credits_cost=3)

    assert user.quota.calculate_used_credits() == 3


def test_can_create_container_when_allowed_active_and_enough_credits(user, container_type):
    assert user.quota.can_create_container(container_type) is True


def test_cannot_create_container_of_a_disallowed_type(user, container_type):
    user.quota.allowed_types.remove(container_type)

    assert user.quota.can_create_container(container_type) is False


def test_cannot_create_container_with_inactive_quota(user, container_type):
    quota = user.quota
    quota.active = False
    quota.save()

    assert quota.can_create_container(container_type) is False


def test_cannot_create_container_without_enough_credits(user, make_container, db):
    large = ContainerType.objects.get(container_type_name="large")

    assert user.quota.can_create_container(large) is False


def test_quota_lists_the_users_audit_and_ai_logs(user, other_user):
    mine = AuditLog.objects.create(user=user, action="container.create")
    AuditLog.objects.create(user=other_user, action="container.create")
    ai = AIUsageLog.objects.create(user=user, query="hi")
    AIUsageLog.objects.create(user=other_user, query="hi")

    assert list(user.quota.get_user_logs()) == [mine]
    assert list(user.quota.get_user_ai_logs()) == [ai]


def test_ai_uses_left_today_counts_only_todays_uses(user):
    from datetime import timedelta

    from django.utils import timezone

    AIUsageLog.objects.create(user=user, query="today")
    old = AIUsageLog.objects.create(user=user, query="yesterday")
    AIUsageLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))

    assert user.quota.ai_uses_left_today() == user.quota.ai_use_per_day - 1
