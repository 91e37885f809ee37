"""Templates: everyone reads the public ones, staff write, apply writes files into /app."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from internal_config.models import AuditLog
from tests.support.api import workspace
from vm_manager.models import FileTemplate, FileTemplateItem

TEMPLATE_FIELDS = {
    "id",
    "name",
    "slug",
    "description",
    "public",
    "items",
    "created_at",
    "updated_at",
}


@pytest.fixture
def template(db) -> FileTemplate:
    template = FileTemplate.objects.create(name="Flask", slug="flask", description="A web app")
    FileTemplateItem.objects.create(template=template, path="app.py", content="print(1)\n", order=1)
    FileTemplateItem.objects.create(
        template=template, path="bin/run.sh", content="#!/bin/sh\n", mode=0o755, order=2
    )
    return template


@pytest.fixture
def hidden_template(db) -> FileTemplate:
    return FileTemplate.objects.create(name="Internal", slug="internal", public=False)


TEMPLATE_PERMISSIONS = ("view", "add", "change", "delete")


@pytest.fixture
def staff_client(client_for, make_user):
    staff = make_user("staff", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            codename__in=[f"{verb}_filetemplate" for verb in TEMPLATE_PERMISSIONS]
        )
    )
    return client_for(staff)


def test_list_shows_public_templates_with_items(api_client, template, hidden_template):
    response = api_client.get("/api/templates/")

    assert response.status_code == 200
    by_slug = {t["slug"]: t for t in response.json()}
    assert "flask" in by_slug
    assert "internal" not in by_slug
    shown = by_slug["flask"]
    assert set(shown) == TEMPLATE_FIELDS
    assert [i["path"] for i in shown["items"]] == ["app.py", "bin/run.sh"]
    assert set(shown["items"][0]) == {"id", "path", "content", "mode", "order"}


def test_staff_see_private_templates(staff_client, template, hidden_template):
    slugs = {t["slug"] for t in staff_client.get("/api/templates/").json()}

    assert {"flask", "internal"} <= slugs


def test_retrieve_of_a_private_template_is_404_for_users(api_client, hidden_template):
    assert api_client.get(f"/api/templates/{hidden_template.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("post", ""), ("put", "{pk}/"), ("patch", "{pk}/"), ("delete", "{pk}/")],
)
def test_template_writes_are_staff_only(api_client, template, method, suffix):
    url = "/api/templates/" + suffix.format(pk=template.pk)

    response = getattr(api_client, method)(url, {"name": "x", "slug": "x"}, format="json")

    assert response.status_code == 403


def test_staff_create_a_template_with_items(staff_client):
    response = staff_client.post(
        "/api/templates/",
        {
            "name": "Node",
            "slug": "node",
            "items": [{"path": "index.js", "content": "1", "mode": 0o600, "order": 0}],
        },
        format="json",
    )

    assert response.status_code == 201
    assert set(response.json()) == TEMPLATE_FIELDS
    assert response.json()["items"][0]["mode"] == 0o600
    assert FileTemplate.objects.get(slug="node").items.count() == 1
    assert AuditLog.objects.get(action="template.create").success  # one row: the service's


def test_staff_create_with_a_taken_slug_is_400(staff_client, template):
    response = staff_client.post(
        "/api/templates/", {"name": "Again", "slug": "flask"}, format="json"
    )

    assert response.status_code == 400


@pytest.mark.parametrize("path", ["../escape", "/", "a/../../b", ""])
def test_items_must_stay_inside_the_destination(staff_client, path):
    response = staff_client.post(
        "/api/templates/",
        {"name": "Bad", "slug": "bad", "items": [{"path": path, "content": ""}]},
        format="json",
    )

    assert response.status_code == 400


def test_staff_patch_keeps_items_and_put_replaces_them(staff_client, template):
    patched = staff_client.patch(
        f"/api/templates/{template.pk}/", {"description": "new"}, format="json"
    )
    put = staff_client.put(
        f"/api/templates/{template.pk}/",
        {"name": "Flask", "slug": "flask", "items": [{"path": "only.txt", "content": "x"}]},
        format="json",
    )

    assert patched.json()["description"] == "new"
    assert len(patched.json()["items"]) == 2
    assert [i["path"] for i in put.json()["items"]] == ["only.txt"]


def test_staff_delete_a_template(staff_client, template):
    response = staff_client.delete(f"/api/templates/{template.pk}/")

    assert response.status_code == 204
    assert not FileTemplate.objects.filter(pk=template.pk).exists()
    assert AuditLog.objects.get(action="template.delete").success


def test_apply_writes_the_files_into_the_container(api_client, template, running_container):
    response = api_client.post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": running_container.pk},
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {
        "status": "applied",
        "template_id": template.pk,
        "container": running_container.pk,
        "dest_path": "/app",
        "files_count": 2,
    }
    root = workspace(running_container)
    assert (root / "app.py").read_text() == "print(1)\n"
    assert (root / "bin/run.sh").stat().st_mode & 0o777 == 0o755
    row = AuditLog.objects.get(action="template.apply")
    assert row.success and row.target_id == str(running_container.pk)


def test_apply_into_a_subfolder(api_client, template, running_container):
    response = api_client.post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": running_container.pk, "dest_path": "/app/site", "clean": False},
        format="json",
    )

    assert response.json()["dest_path"] == "/app/site"
    assert (workspace(running_container) / "site/app.py").exists()


def test_apply_outside_app_is_400(api_client, template, running_container):
    response = api_client.post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": running_container.pk, "dest_path": "/etc"},
        format="json",
    )

    assert response.status_code == 400


def test_apply_to_a_stopped_container_is_409(api_client, template, stopped_container):
    response = api_client.post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": stopped_container.pk},
        format="json",
    )

    assert response.status_code == 409
    assert not AuditLog.objects.get(action="template.apply").success


def test_apply_to_someone_elses_container_is_404(
    client_for, other_user, template, running_container
):
    response = client_for(other_user).post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": running_container.pk},
        format="json",
    )

    assert response.status_code == 404
    assert not (workspace(running_container) / "app.py").exists()


def test_apply_of_a_private_template_is_404(api_client, hidden_template, running_container):
    response = api_client.post(
        f"/api/templates/{hidden_template.pk}/apply/",
        {"container_id": running_container.pk},
        format="json",
    )

    assert response.status_code == 404


def test_apply_without_container_id_is_400(api_client, template):
    response = api_client.post(f"/api/templates/{template.pk}/apply/", {}, format="json")

    assert response.status_code == 400


# -- clean: the destination's contents go first, nothing outside it ------------------------


def apply(api_client, template, container, dest_path: str, clean: bool):
    return api_client.post(
        f"/api/templates/{template.pk}/apply/",
        {"container_id": container.pk, "dest_path": dest_path, "clean": clean},
        format="json",
    )


def test_apply_with_clean_empties_the_destination_first(api_client, template, running_container):
    root = workspace(running_container)
    (root / "old.txt").write_text("old")
    (root / "src").mkdir()
    (root / "src" / "lib.py").write_text("x")
    (root / "app.py").write_text("mine")

    response = apply(api_client, template, running_container, "/app", clean=True)

    assert response.status_code == 200
    assert sorted(p.name for p in root.iterdir()) == ["app.py", "bin"]
    assert (root / "app.py").read_text() == "print(1)\n"


def test_apply_without_clean_keeps_unrelated_files(api_client, template, running_container):
    root = workspace(running_container)
    (root / "old.txt").write_text("old")

    assert apply(api_client, template, running_container, "/app", clean=False).status_code == 200

    assert (root / "old.txt").read_text() == "old"
    assert (root / "app.py").read_text() == "print(1)\n"


def test_apply_with_clean_into_a_subfolder_keeps_everything_beside_it(
    api_client, template, running_container
):
    root = workspace(running_container)
    (root / "site").mkdir()
    (root / "site" / "stale.html").write_text("stale")
    (root / "keep.txt").write_text("keep")

    assert apply(api_client, template, running_container, "/app/site", True).status_code == 200

    assert not (root / "site" / "stale.html").exists()
    assert (root / "site" / "app.py").exists()
    assert (root / "keep.txt").read_text() == "keep"


def test_apply_with_clean_climbing_out_with_dotdot_is_400_and_deletes_nothing(
    api_client, template, running_container
):
    root = workspace(running_container)
    (root / "keep.txt").write_text("keep")

    response = apply(api_client, template, running_container, "/app/../", clean=True)

    assert response.status_code == 400
    assert response.json()["code"] == "path_not_allowed"
    assert (root / "keep.txt").read_text() == "keep"


def test_apply_with_clean_into_a_symlink_out_of_app_is_400_and_deletes_nothing(
    api_client, template, running_container, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("precious")
    (workspace(running_container) / "link").symlink_to(outside)

    response = apply(api_client, template, running_container, "/app/link", clean=True)

    assert response.status_code == 400
    assert (outside / "precious").read_text() == "precious"
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]


def test_apply_with_clean_leaves_a_symlink_out_of_app_and_its_target_alone(
    api_client, template, running_container, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("precious")
    root = workspace(running_container)
    (root / "site").mkdir()
    (root / "site" / "out").symlink_to(outside)
    (root / "site" / "stale.html").write_text("stale")

    assert apply(api_client, template, running_container, "/app/site", True).status_code == 200

    assert (outside / "precious").read_text() == "precious"
    assert not (root / "site" / "stale.html").exists()
    assert (root / "site" / "out").is_symlink()
