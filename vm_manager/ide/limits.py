"""Per-user caps on open sockets and on terminals, counted in this worker process.

Entry points: ``socket_slots`` and ``terminal_slots`` (``claim(user_pk)`` raises
``TooManySockets`` / ``TooManyTerminals``, ``release(user_pk)``), ``max_sockets()``,
``max_terminals()``.

The caps are ``SOCKETS_MAX_PER_USER`` (console, editor and AI sockets together, default 24) and
``TERMINALS_MAX_PER_USER`` (terminal sessions over every console socket, default 16) from the
settings. They are counted per worker process: a counter shared through Redis would stay high
forever after a worker dies, locking its users out, while a per-process count is exact and
dies with its sockets. Behind N workers a user can hold at most N times the cap.
"""

from __future__ import annotations

import threading
from collections import Counter

from django.conf import settings

from pequeroku.errors import DomainError

CLOSE_TOO_MANY = 4429


class TooManySockets(DomainError):
    status_code = 429
    code = "too_many_sockets"
    close_code = CLOSE_TOO_MANY
    default_message = "Too many open sockets; close some IDE tabs and try again."


class TooManyTerminals(DomainError):
    status_code = 429
    code = "too_many_terminals"
    close_code = CLOSE_TOO_MANY
    default_message = "Too many open terminals; close some and try again."


def max_sockets() -> int:
    return int(settings.SOCKETS_MAX_PER_USER)


def max_terminals() -> int:
    return int(settings.TERMINALS_MAX_PER_USER)


class Slots:
    """A per-user counter with a cap read at each claim (settings may change in tests)."""

    def __init__(self, cap: object, error: type[DomainError]) -> None:
        self._cap = cap
        self._error = error
        self._held: Counter[int] = Counter()
        self._lock = threading.Lock()

    def claim(self, user_pk: int) -> None:
        cap = self._cap() if callable(self._cap) else int(self._cap)  # type: ignore[call-overload]
        with self._lock:
            if self._held[user_pk] >= cap:
                raise self._error(f"{self._error.default_message} (limit {cap})")
            self._held[user_pk] += 1

    def release(self, user_pk: int) -> None:
        with self._lock:
            if self._held[user_pk] <= 1:
                self._held.pop(user_pk, None)
            else:
                self._held[user_pk] -= 1

    def held(self, user_pk: int) -> int:
        with self._lock:
            return self._held[user_pk]


socket_slots = Slots(max_sockets, TooManySockets)
terminal_slots = Slots(max_terminals, TooManyTerminals)
