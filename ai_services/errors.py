"""Domain errors of the AI assistant; ``close_code`` is what the socket closes with."""

from __future__ import annotations

from pequeroku.errors import DomainError


class AIError(DomainError):
    close_code: int = 4400


class AIContainerMissing(AIError):
    status_code = 404
    close_code = 4404
    code = "not_found"
    default_message = "No such container."


class AIContainerNotAllowed(AIError):
    status_code = 403
    close_code = 4403
    code = "forbidden"
    default_message = "You cannot use the assistant of this container."


class AINoUsesLeft(AIError):
    status_code = 403
    # The contract closes a socket without uses left with 4401, like a logged-out one.
    close_code = 4401
    code = "ai_quota_exhausted"
    default_message = "You have used all of today's AI requests; they reset at 00:00 UTC."
