"""L1: staff rights in the API are the model permissions the admin checks, not ``is_staff``.

The ``default`` template is written into every new workspace, so whoever can change it plants
files in everyone's next container.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from vm_manager.models import FileTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def bare_staff(make_user, client_for):
    """A staff account holding no permission at all."""
    return client_for(make_user("intern", is_staff=True))


@pytest.fixture
def default_template(db) -> FileTemplate:
    return FileTemplate.objects.get(slug="default")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_staff_without_template_permissions_cannot_plant_files_in_the_default_template(
    bare_staff, default_template, method
):
    planted = {"name": "Default", "slug": "default", "items": [{"path": "x.sh", "content": "evil"}]}

    response = getattr(bare_staff, method)(
        f"/api/templates/{default_template.pk}/", planted, format="json"
    )

    assert response.status_code == 403
    assert FileTemplate.objects.filter(pk=default_template.pk).exists()
    assert not default_template.items.filter(path="x.sh").exists()


def test_staff_without_template_permissions_cannot_create_templates(bare_staff):
    response = bare_staff.post("/api/templates/", {"name": "X", "slug": "x"}, format="json")

    assert response.status_code == 403
    assert not FileTemplate.objects.filter(slug="x").exists()


def test_staff_without_view_permission_do_not_see_private_templates(bare_staff, db):
    FileTemplate.objects.create(name="Internal", slug="internal", public=False)

    slugs = {t["slug"] for t in bare_staff.get("/api/templates/").json()}

    assert "internal" not in slugs


def test_staff_holding_only_change_permission_cannot_delete(client_for, make_user):
    staff = make_user("editor", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="change_filetemplate"))
    template = FileTemplate.objects.create(name="T", slug="t")

    response = client_for(staff).delete(f"/api/templates/{template.pk}/")

    assert response.status_code == 403
    assert FileTemplate.objects.filter(pk=template.pk).exists()
