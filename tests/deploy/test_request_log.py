"""One log line per request, JSON with LOG_FORMAT=json, never the query string."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from pequeroku import settings as prod_settings
from pequeroku.logging import JsonFormatter


def _request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pequeroku.request"]


def test_a_request_logs_exactly_one_line_with_method_path_and_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pequeroku.request")

    Client().get("/healthz")

    [record] = _request_records(caplog)
    assert record.getMessage().startswith("GET /healthz 200 ")
    assert (record.method, record.path, record.status) == ("GET", "/healthz", 200)


@pytest.mark.django_db
def test_the_log_line_names_the_user_id_not_the_password(
    caplog: pytest.LogCaptureFixture, user: User, password: str
) -> None:
    client = Client()
    client.force_login(user)
    caplog.set_level(logging.INFO, logger="pequeroku.request")

    client.get("/api/schema/")

    [record] = _request_records(caplog)
    assert record.user_id == user.pk
    assert password not in caplog.text


def test_the_query_string_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pequeroku.request")

    Client().get("/healthz?token=s3cret-value")

    [record] = _request_records(caplog)
    assert "s3cret" not in record.getMessage()
    assert record.path == "/healthz"


def test_an_unknown_path_logs_one_line_with_404_under_production_logging(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    level = prod_settings.LOGGING["loggers"]["django.request"]["level"]
    monkeypatch.setattr(logging.getLogger("django.request"), "level", logging.getLevelName(level))
    caplog.set_level(logging.INFO, logger="pequeroku.request")

    Client().get("/no-such-page/")

    assert [r.getMessage().split(" ")[:3] for r in caplog.records] == [
        ["GET", "/no-such-page/", "404"]
    ]


async def test_async_requests_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pequeroku.request")

    await AsyncClient().get("/healthz")

    [record] = _request_records(caplog)
    assert record.status == 200


def test_json_format_renders_the_request_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pequeroku.request")
    Client().get("/healthz")
    [record] = _request_records(caplog)

    line = JsonFormatter().format(record)

    payload = json.loads(line)
    assert "\n" not in line
    assert payload["logger"] == "pequeroku.request"
    assert payload["method"] == "GET"
    assert payload["path"] == "/healthz"
    assert payload["status"] == 200
    assert isinstance(payload["duration_ms"], float)
