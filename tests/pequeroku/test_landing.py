"""``/`` says what this server is and where to go; a logged-in user sees their containers."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_landing_page_says_what_this_is_and_links_admin_and_api_docs() -> None:
    response = Client().get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Pequeroku" in page
    for link in ('href="/admin/"', 'href="/api/schema/swagger-ui/"', 'href="/api/schema/redoc/"'):
        assert link in page


def test_an_anonymous_visitor_is_offered_a_login_and_sees_no_containers() -> None:
    page = Client().get("/").content.decode()

    assert 'href="/admin/login/?next=/"' in page
    assert "Your containers" not in page


def test_a_logged_in_user_sees_their_containers_with_their_state(
    user, other_user, make_container
) -> None:
    make_container(user, name="mine-running", status="running", desired_state="running")
    make_container(user, name="mine-stopped", status="stopped", desired_state="stopped")
    make_container(other_user, name="someone-elses")
    client = Client()
    client.force_login(user)

    page = client.get("/").content.decode()

    assert "Your containers" in page
    assert "mine-running" in page and 'class="state-running">running<' in page
    assert "mine-stopped" in page and 'class="state-stopped">stopped<' in page
    assert "someone-elses" not in page


def test_container_names_are_escaped(user, make_container) -> None:
    make_container(user, name='<script>alert("x")</script>')
    client = Client()
    client.force_login(user)

    page = client.get("/").content.decode()

    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_a_user_without_containers_is_told_how_to_create_one(user) -> None:
    client = Client()
    client.force_login(user)

    page = client.get("/").content.decode()

    assert "No containers yet" in page


def test_the_landing_page_takes_no_post() -> None:
    assert Client().post("/").status_code == 405
