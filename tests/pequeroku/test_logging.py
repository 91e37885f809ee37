"""The project's logging configuration (settings.LOGGING), applied as the server applies it.

The test settings log nothing; each test here installs the production LOGGING with the console
handler writing to a buffer, and puts the previous configuration back afterwards.
"""

from __future__ import annotations

import copy
import io
import logging
import logging.config
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosedError

from pequeroku import settings as prod_settings

ProjectLog = Callable[..., io.StringIO]


def _snapshot(names: list[str]) -> list[tuple[logging.Logger, dict[str, object]]]:
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in names)]
    return [
        (
            logger,
            {
                "level": logger.level,
                "handlers": list(logger.handlers),
                "filters": list(logger.filters),
                "propagate": logger.propagate,
            },
        )
        for logger in loggers
    ]


@pytest.fixture
def project_log() -> Iterator[ProjectLog]:
    saved = _snapshot(list(prod_settings.LOGGING["loggers"]))

    def install(**logger_levels: str) -> io.StringIO:
        stream = io.StringIO()
        config = copy.deepcopy(prod_settings.LOGGING)
        config["handlers"]["console"].update(formatter="text", stream=stream)
        for name, level in logger_levels.items():
            config["loggers"].setdefault(name, {})["level"] = level
        logging.config.dictConfig(config)
        return stream

    yield install
    for logger, state in saved:
        logger.setLevel(state["level"])
        logger.handlers[:] = state["handlers"]
        logger.filters[:] = state["filters"]
        logger.propagate = state["propagate"]


@pytest.mark.django_db
def test_a_no_capacity_503_is_one_warning_line(project_log, api_client, container_type) -> None:
    log = project_log()

    response = api_client.post(
        "/api/containers/", {"container_type": container_type.pk}, format="json"
    )

    assert response.status_code == 503
    [line] = log.getvalue().splitlines()
    assert " WARNING pequeroku.request POST /api/containers/ 503 " in line


def test_a_client_that_went_away_is_not_logged_as_an_error(project_log) -> None:
    log = project_log()

    for exc in (ConnectionResetError(104, "reset"), ConnectionClosedError(None, None)):
        try:
            raise exc
        except Exception:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")

    assert log.getvalue() == ""


def test_a_client_that_went_away_is_logged_at_debug_when_debug_is_on(project_log) -> None:
    log = project_log(**{"uvicorn.error": "DEBUG"})

    try:
        raise BrokenPipeError(32, "Broken pipe")
    except OSError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")

    assert " DEBUG uvicorn.error Exception in ASGI application" in log.getvalue()


def test_an_error_raised_while_handling_a_disconnect_counts_as_the_disconnect(
    project_log,
) -> None:
    log = project_log()

    try:
        try:
            raise ConnectionResetError(104, "reset")
        except OSError as exc:
            raise RuntimeError("send failed") from exc
    except RuntimeError:
        logging.getLogger("django.request").exception("Internal Server Error: /api/x/")

    assert log.getvalue() == ""


def test_a_real_error_keeps_its_level_and_traceback(project_log) -> None:
    log = project_log()

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")

    assert " ERROR uvicorn.error Exception in ASGI application" in log.getvalue()
    assert "Traceback" in log.getvalue()


def test_a_disconnect_reported_through_uvicorns_own_handler_is_not_an_error(project_log) -> None:
    # As the uvicorn command line configures it: "uvicorn" has a handler of its own and does
    # not propagate; "uvicorn.error" propagates to it. Django's settings are applied after.
    uvicorn_stream = io.StringIO()
    parent = logging.getLogger("uvicorn")
    handler = logging.StreamHandler(uvicorn_stream)
    saved = (list(parent.handlers), parent.propagate, parent.level)
    parent.handlers[:] = [handler]
    parent.propagate = False
    parent.setLevel(logging.INFO)
    try:
        project_log()
        try:
            raise ConnectionResetError(104, "reset")
        except OSError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    finally:
        parent.handlers[:], parent.propagate = saved[0], saved[1]
        parent.setLevel(saved[2])

    assert uvicorn_stream.getvalue().count("Exception in ASGI application") == 1
    assert "RuntimeError: boom" in uvicorn_stream.getvalue()
