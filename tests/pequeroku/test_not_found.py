"""Unknown paths under /api/ answer the API's error shape; the rest of the site is unchanged."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client


@pytest.mark.parametrize("path", ["/api/nope/", "/api/containers/1/nope/", "/api/nope"])
def test_an_unknown_api_path_is_a_json_404(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


async def test_an_unknown_api_path_is_a_json_404_under_asgi() -> None:
    response = await AsyncClient().post("/api/nope/", {})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_missing_trailing_slash_still_redirects() -> None:
    response = Client().get("/api/containers")

    assert response.status_code == 301
    assert response["Location"] == "/api/containers/"


@pytest.mark.django_db
def test_an_api_404_for_a_missing_object_keeps_its_own_body(api_client) -> None:
    response = api_client.get("/api/containers/999999/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_unknown_path_outside_the_api_is_not_json() -> None:
    response = Client().get("/nope/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")
