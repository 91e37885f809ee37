"""Stored XSS: names one user chooses and others see cannot carry markup.

A container named ``<img src=x onerror=...>`` ran script in the superuser's dashboard, which
renders names with ``innerHTML``; teammates see each other's containers too.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from vm_manager.models import Container, FileTemplate, Team

pytestmark = pytest.mark.django_db

PAYLOAD = "<img src=x onerror=alert(document.cookie)>"
ALLOWED = "letters, digits, spaces, '.', '_' and '-'"


def test_an_html_container_name_is_refused_on_create(api_client, node, container_type):
    response = api_client.post(
        "/api/containers/",
        {"container_type": container_type.pk, "container_name": PAYLOAD},
        format="json",
    )

    assert response.status_code == 400
    assert ALLOWED in str(response.json()["errors"]["container_name"])
    assert not Container.objects.filter(name=PAYLOAD).exists()


def test_an_html_container_name_is_refused_on_rename(api_client, running_container):
    response = api_client.patch(
        f"/api/containers/{running_container.pk}/", {"name": PAYLOAD}, format="json"
    )

    assert response.status_code == 400
    assert ALLOWED in str(response.json()["errors"]["name"])
    running_container.refresh_from_db()
    assert running_container.name == "web"


@pytest.mark.parametrize("name", ['a" autofocus onfocus="x', "a&lt;b", "line\nbreak", "x\u202ey"])
def test_names_that_break_out_of_attributes_or_text_are_refused(
    api_client, running_container, name
):
    response = api_client.patch(
        f"/api/containers/{running_container.pk}/", {"name": name}, format="json"
    )

    assert response.status_code == 400


def test_an_html_template_name_or_description_is_refused(client_for, make_user):
    staff = make_user("author", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_filetemplate"))
    client = client_for(staff)

    named = client.post("/api/templates/", {"name": PAYLOAD, "slug": "a"}, format="json")
    described = client.post(
        "/api/templates/", {"name": "Flask", "slug": "b", "description": PAYLOAD}, format="json"
    )

    assert named.status_code == described.status_code == 400
    assert not FileTemplate.objects.filter(slug__in=["a", "b"]).exists()


def test_an_html_team_name_is_refused_in_the_admin(admin_client, user):
    response = admin_client.post(
        reverse("admin:vm_manager_team_add"),
        {
            "name": PAYLOAD,
            "owner": user.pk,
            "active": "on",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200
    assert "Names may contain only" in response.content.decode()
    assert not Team.objects.filter(name=PAYLOAD).exists()


def test_an_html_container_name_is_refused_in_the_admin(admin_client, running_container):
    url = reverse("admin:vm_manager_container_change", args=[running_container.pk])
    page = admin_client.get(url)
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k in form.fields}
    data.update(name=PAYLOAD, user=running_container.user_id, node=running_container.node_id or "")

    admin_client.post(url, data)

    running_container.refresh_from_db()
    assert running_container.name == "web"
