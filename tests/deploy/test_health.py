"""/healthz and /readyz: no auth, any Host, no secrets, 503 naming the failed check."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import Client

from pequeroku import health


@pytest.fixture
def client() -> Client:
    return Client()


def test_healthz_answers_200_without_login(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_answers_probes_whose_host_is_not_allowed(client: Client) -> None:
    response = client.get("/healthz", HTTP_HOST="10.9.8.7:8000")

    assert response.status_code == 200


@pytest.mark.django_db
def test_readyz_reports_database_and_channel_layer_ok(client: Client) -> None:
    response = client.get("/readyz/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "channel_layer": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_naming_the_failed_check_without_its_message(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise OperationalError("could not connect: password=hunter2-secret")

    monkeypatch.setitem(health.READINESS_CHECKS, "database", broken)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": "error: OperationalError",
        "channel_layer": "ok",
    }
    assert b"hunter2" not in response.content


def test_health_responses_are_not_cached(client: Client) -> None:
    response = client.get("/healthz")

    assert "no-cache" in response["Cache-Control"]
