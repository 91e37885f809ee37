"""Template writes are audited in the service, whoever calls it (API, admin, a script)."""

from __future__ import annotations

import pytest

from internal_config.models import AuditLog
from vm_manager.guest.templates import Actor, template_create, template_delete, template_update
from vm_manager.models import FileTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor(make_user) -> Actor:
    return Actor(user=make_user("staffer", is_staff=True), ip="10.1.2.3", user_agent="script")


def rows(action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action))


def test_creating_a_template_writes_one_audit_row_with_the_actor(actor):
    template = template_create(
        actor=actor,
        fields={"name": "Web", "slug": "web"},
        items=[{"path": "index.html", "content": "<p>hi</p>"}],
    )

    [row] = rows("template.create")
    assert (row.user, row.ip, row.target_type, row.target_id) == (
        actor.user,
        "10.1.2.3",
        "template",
        str(template.pk),
    )
    assert row.success and row.metadata == {"slug": "web", "items": 1}


def test_updating_a_template_records_what_changed(actor):
    template = FileTemplate.objects.create(name="Web", slug="web")

    template_update(template, actor=actor, fields={"description": "A site"}, items=None)

    [row] = rows("template.update")
    assert row.metadata == {"fields": ["description"]} and row.target_id == str(template.pk)


def test_deleting_a_template_keeps_its_id_and_slug_in_the_audit_row(actor):
    template = FileTemplate.objects.create(name="Web", slug="web")
    pk = template.pk

    template_delete(template, actor=actor)

    [row] = rows("template.delete")
    assert (row.target_id, row.metadata) == (str(pk), {"slug": "web"})
    assert not FileTemplate.objects.filter(pk=pk).exists()
