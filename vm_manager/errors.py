"""Domain errors of the VM manager, rendered by ``pequeroku.exceptions``."""

from __future__ import annotations

from pequeroku.errors import DomainError


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
    code = "forbidden"
    default_message = "That container is not yours to open."


class ContainerMissing(VMManagerError):
    status_code = 404
    code = "not_found"
    default_message = "No such container."
