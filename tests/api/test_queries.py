"""List endpoints cost the same number of queries whatever the number of rows."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from vm_manager.models import FileTemplate, FileTemplateItem
from vm_manager.selectors import container_rows_for_user, container_rows_list_for_user


@pytest.fixture
def containers_of(user, teammate, node, make_container, container_type):
    def make(count: int) -> None:
        for i in range(count):
            owner = user if i % 2 else teammate
            # Every fifth one is a legacy container without a type.
            make_container(owner, node=node, container_type=None if i % 5 == 0 else container_type)

    return make


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def test_container_list_queries_do_not_grow_with_rows(
    api_client, containers_of, django_assert_num_queries
):
    containers_of(5)
    with django_assert_num_queries(1):
        assert len(api_client.get("/api/containers/").json()) == 5

    containers_of(45)
    with django_assert_num_queries(1):
        assert len(api_client.get("/api/containers/").json()) == 50


def test_container_list_with_limit_is_still_one_query(api_client, containers_of):
    containers_of(5)
    small = count_queries(api_client, "/api/containers/?limit=3")
    containers_of(45)

    assert count_queries(api_client, "/api/containers/?limit=40") == small == 1


def test_the_compiled_list_statement_serves_each_user_their_own_rows(
    user, other_user, teammate, node, make_container, django_assert_num_queries
):
    mine = make_container(user, node=node)
    theirs = make_container(teammate, node=node)
    hidden = make_container(other_user, node=node)
    container_rows_list_for_user(other_user)  # compiled for one user first

    with django_assert_num_queries(1):
        rows = container_rows_list_for_user(user)

    assert [row["id"] for row in rows] == [theirs.pk, mine.pk]
    assert [row["id"] for row in container_rows_list_for_user(other_user)] == [hidden.pk]
    assert rows == list(container_rows_for_user(user))  # same rows, types and order as the ORM


def test_template_list_queries_do_not_grow_with_rows(api_client, db):
    def add(count: int) -> None:
        for _ in range(count):
            n = FileTemplate.objects.count()
            template = FileTemplate.objects.create(name=f"t{n}", slug=f"t{n}")
            FileTemplateItem.objects.create(template=template, path="a", content="")

    add(2)
    few = count_queries(api_client, "/api/templates/")
    add(20)

    assert count_queries(api_client, "/api/templates/") == few


def test_container_type_list_is_one_query(api_client, django_assert_num_queries):
    with django_assert_num_queries(1):
        api_client.get("/api/container-types/")
