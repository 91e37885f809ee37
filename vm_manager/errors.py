"""Domain errors of the VM manager and the one map from node errors to them.

Entry points: the error classes (rendered by ``pequeroku.errors.exception_handler``; each
carries its socket close code), ``domain_error_for(node_error)`` and the context manager
``node_errors_as_domain_errors()``, used by REST, the sockets and the AI tools alike.

What a user sees of a node failure is the domain error's message: never the node's address,
its token or a traceback (the node's own text is kept only for "not found", "not allowed" and
"bad request", which describe the user's path, not the node).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pequeroku.errors import DomainError
from vm_manager.drivers.base import (
    GuestFileNotFound,
    GuestFileTooLarge,
    NodeBadRequest,
    NodeError,
    PathNotAllowed,
    PathTooLong,
    VMNotFound,
    VMNotRunning,
)


class VMManagerError(DomainError):
    pass


class QuotaInactive(VMManagerError):
    status_code = 403
    code = "quota_inactive"
    default_message = "Your quota is inactive."


class ContainerTypeNotAllowed(VMManagerError):
    status_code = 403
    code = "type_not_allowed"
    default_message = "Your quota does not allow this container type."


class NotEnoughCredits(VMManagerError):
    status_code = 403
    code = "not_enough_credits"
    default_message = "Not enough credits."


class ContainerLimitReached(VMManagerError):
    status_code = 403
    code = "container_limit"
    default_message = "You have reached the per-user container limit."


class UnknownContainerType(VMManagerError):
    status_code = 400
    code = "unknown_container_type"
    default_message = "Unknown container type."


class NoNodeAvailable(VMManagerError):
    status_code = 503
    code = "no_capacity"
    default_message = "No node can take this container right now; try again later."


class InvalidStatusTransition(VMManagerError):
    status_code = 409
    code = "invalid_transition"
    default_message = "That status change is not allowed."


class ContainerNotRunning(VMManagerError):
    status_code = 409
    code = "container_not_running"
    default_message = "The container is not running."


class NodeUnreachable(VMManagerError):
    status_code = 503
    code = "node_unavailable"
    default_message = "The container's node is not reachable right now."


class PathOutsideWorkspace(VMManagerError):
    status_code = 400
    code = "path_not_allowed"
    default_message = "Paths must stay inside /app."


class GuestPathNotFound(VMManagerError):
    status_code = 404
    code = "file_not_found"
    default_message = "No such file or folder in the container."


class GuestRequestRejected(VMManagerError):
    status_code = 400
    code = "bad_request"
    default_message = "The container refused that request."


class GuestFileTooBig(VMManagerError):
    status_code = 413
    code = "file_too_large"
    default_message = "The file is too large to open here; download it instead."


class UploadTooLarge(VMManagerError):
    status_code = 413
    code = "file_too_large"
    default_message = "The file is larger than the upload limit."


class InvalidCredentials(VMManagerError):
    status_code = 400
    code = "invalid_credentials"
    default_message = "Wrong username or password."


class ContainerNotVisible(VMManagerError):
    status_code = 403
    close_code = 4403
    code = "forbidden"
    default_message = "That container is not yours to open."


class ContainerMissing(VMManagerError):
    status_code = 404
    close_code = 4404
    code = "not_found"
    default_message = "No such container."


def domain_error_for(exc: NodeError) -> VMManagerError:
    """The user's view of a node failure."""
    if isinstance(exc, PathTooLong):
        return PathOutsideWorkspace("That path is too long.", code="path_too_long")
    if isinstance(exc, PathNotAllowed):
        return PathOutsideWorkspace(_node_text(exc, "path not allowed"))
    if isinstance(exc, GuestFileNotFound):
        return GuestPathNotFound(_node_text(exc, "not found"))
    if isinstance(exc, GuestFileTooLarge):
        return GuestFileTooBig(_node_text(exc))
    if isinstance(exc, VMNotRunning | VMNotFound):
        return ContainerNotRunning()
    if isinstance(exc, NodeBadRequest):
        return GuestRequestRejected(_node_text(exc))
    # Unreachable, refused token, 5xx: the text names the node; the user learns only this.
    return NodeUnreachable()


def _node_text(exc: NodeError, label: str = "") -> str | None:
    text = str(exc)[:300]
    if not text:
        return None
    return f"{label}: {text}" if label else text


@contextlib.contextmanager
def node_errors_as_domain_errors() -> Iterator[None]:
    try:
        yield
    except NodeError as exc:
        raise domain_error_for(exc) from exc
