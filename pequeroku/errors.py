"""Base class of every domain error; apps subclass it with a status and a code."""

from __future__ import annotations


class DomainError(Exception):
    status_code: int = 400
    code: str = "error"
    default_message: str = "The request could not be completed."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        super().__init__(self.message)
