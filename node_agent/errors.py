"""Agent errors: each carries the HTTP status and the machine-readable ``code`` of its JSON body.

``vm_manager.drivers.http`` maps ``code`` back to the ``NodeError`` subclasses.
"""

from __future__ import annotations


class AgentError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequestError(AgentError):
    pass


class PathNotAllowedError(AgentError):
    code = "path_not_allowed"


class ImageNotFoundError(AgentError):
    code = "image_not_found"


class VMNotFoundError(AgentError):
    status = 404
    code = "vm_not_found"


class GuestFileNotFoundError(AgentError):
    status = 404
    code = "file_not_found"


class FileTooLargeError(AgentError):
    status = 413
    code = "file_too_large"


class VMNotRunningError(AgentError):
    status = 409
    code = "vm_not_running"


class SSHNotReadyError(AgentError):
    status = 409
    code = "ssh_not_ready"


class IdentityMismatchError(AgentError):
    status = 409
    code = "identity_mismatch"


class QemuError(AgentError):
    status = 500
    code = "qemu_failed"


class ArchiveTooLargeError(AgentError):
    code = "archive_too_large"


class IsolationUnavailableError(AgentError):
    """The guest egress policy is not in force: the agent serves its API but runs no VMs."""

    status = 503
    code = "isolation_unavailable"
