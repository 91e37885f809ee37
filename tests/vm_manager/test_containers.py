import re

import pytest

from internal_config.models import AIUsageLog, AuditLog
from vm_manager.models import Container, ContainerType


def test_container_gets_a_friendly_random_name_when_blank(user, make_container):
    container = make_container(user)

    assert re.fullmatch(r"[a-z]+-[a-z]+-[0-9a-f]{4}", container.name)


def test_container_keeps_a_given_name(user, make_container):
    assert make_container(user, name="my-app").name == "my-app"


def test_container_resources_follow_its_type_on_save(user, make_container, container_type):
    container = make_container(user, memory_mb=1, vcpus=9, disk_gib=99)

    assert (container.memory_mb, container.vcpus, container.disk_gib) == (1024, 1, 5)

    ContainerType.objects.filter(pk=container_type.pk).update(memory_mb=1536)
    container.refresh_from_db()
    container.container_type.refresh_from_db()
    container.save()

    assert Container.objects.get(pk=container.pk).memory_mb == 1536


def test_switching_type_with_update_fields_saves_the_new_resources(user, make_container, db):
    container = make_container(user)
    container.container_type = ContainerType.objects.get(container_type_name="medium")

    container.save(update_fields=["container_type"])

    container.refresh_from_db()
    assert (container.vcpus, container.memory_mb, container.disk_gib) == (2, 2048, 10)


def test_container_without_type_keeps_manual_resources(user, make_container):
    container = make_container(user, container_type=None, memory_mb=700, vcpus=3, disk_gib=7)

    assert (container.memory_mb, container.vcpus, container.disk_gib) == (700, 3, 7)
    assert container.credits_cost == 1


def test_container_quota_is_set_from_the_user(user, make_container):
    assert make_container(user).quota == user.quota


def test_container_vm_id_is_stable_and_unique(user, make_container):
    first, second = make_container(user), make_container(user)

    assert first.vm_id == f"pq-{first.instance_id}"
    assert first.vm_id != second.vm_id


def test_container_machine_logs_are_its_audit_rows(user, make_container):
    container = make_container(user)
    mine = AuditLog.objects.create(
        user=user, action="container.power_on", target_type="container", target_id=container.pk
    )
    AuditLog.objects.create(user=user, action="login", target_type="user", target_id=container.pk)

    assert list(container.get_machine_logs()) == [mine]


def test_container_ai_logs_are_its_usage_rows(user, make_container):
    container, other = make_container(user), make_container(user)
    mine = AIUsageLog.objects.create(user=user, container=container, query="q")
    AIUsageLog.objects.create(user=user, container=other, query="q")

    assert list(container.get_user_ai_logs()) == [mine]


@pytest.mark.parametrize("field", ["memory_mb", "vcpus", "disk_gib"])
def test_container_type_rejects_zero_resources(db, field):
    from django.db import IntegrityError

    values = {"memory_mb": 512, "vcpus": 1, "disk_gib": 1, field: 0}
    with pytest.raises(IntegrityError):
        ContainerType.objects.create(container_type_name="broken", **values)
