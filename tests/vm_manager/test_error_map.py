"""The one map from node errors to domain errors (REST status, socket close code, message)."""

from __future__ import annotations

import pytest

from vm_manager.drivers.base import (
    GuestFileNotFound,
    GuestFileTooLarge,
    NodeAuthError,
    NodeBadRequest,
    NodeError,
    NodeUnavailable,
    PathNotAllowed,
    PathTooLong,
    VMNotFound,
    VMNotRunning,
)
from vm_manager.errors import (
    ContainerMissing,
    ContainerNotVisible,
    domain_error_for,
    node_errors_as_domain_errors,
)

ADDRESS = "https://10.0.0.7:8443"


@pytest.mark.parametrize(
    ("node_error", "status", "code"),
    [
        (PathNotAllowed("path '/etc' is outside /app"), 400, "path_not_allowed"),
        (PathTooLong("path is too long"), 400, "path_too_long"),
        (GuestFileNotFound("/app/x does not exist"), 404, "file_not_found"),
        (GuestFileTooLarge("/app/big is larger than 10 bytes"), 413, "file_too_large"),
        (VMNotRunning("VM pq-1 is stopped"), 409, "container_not_running"),
        (VMNotFound("no VM pq-1"), 409, "container_not_running"),
        (NodeBadRequest("is a directory"), 400, "bad_request"),
        (
            NodeUnavailable(f"node agent {ADDRESS} unreachable: ConnectError"),
            503,
            "node_unavailable",
        ),
        (NodeAuthError("token refused"), 503, "node_unavailable"),
        (NodeError(f"node agent error 500 at {ADDRESS}"), 503, "node_unavailable"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_node_error_has_one_domain_error(node_error, status, code):
    domain = domain_error_for(node_error)

    assert (domain.status_code, domain.code) == (status, code)
    assert ADDRESS not in domain.message and "token" not in domain.message


def test_node_errors_raised_inside_the_context_leave_it_as_domain_errors():
    with pytest.raises(Exception) as caught, node_errors_as_domain_errors():
        raise NodeUnavailable(f"node agent {ADDRESS} unreachable")

    assert caught.value.code == "node_unavailable"
    assert isinstance(caught.value.__cause__, NodeUnavailable)


def test_access_errors_carry_the_socket_close_codes():
    assert ContainerNotVisible.close_code == 4403
    assert ContainerMissing.close_code == 4404
