"""Password guessing limits, per username and per client IP, shared by every worker.

Entry points: ``login_attempt_begin(ip, username)`` (raises ``LoginThrottled``) and
``login_attempt_end(attempt, succeeded)``; ``ThrottledModelBackend`` (``pequeroku.auth``)
calls them around every password check, so the API login, ``/admin/login/`` and HTTP Basic
are all covered by the same counters.

Each key (the username, lower-cased; the client IP) counts the attempts that did not succeed.
The first ``limit - 1`` are free. From the ``limit``-th on, an attempt must take the key's lock,
which it holds for ``LOGIN_LOCKOUT_SECONDS`` doubled for every attempt beyond the limit (capped
at ``LOGIN_LOCKOUT_MAX_SECONDS``); while the lock is held every attempt on that key is refused
before any password is hashed. Counting happens before the password check (an atomic ``incr``,
and ``add`` for the lock), so parallel requests cannot sneak extra guesses past the limit. A
success gives its own attempt back; failures are forgotten ``LOGIN_THROTTLE_WINDOW_SECONDS``
after the last one (or after its lock ends).

The counters live in the default cache: Redis whenever ``REDIS_URL`` is set, so every worker
sees the same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from rest_framework.exceptions import Throttled

KEY_PREFIX = "login-throttle"


class LoginThrottled(Throttled):
    """Too many failed logins for this username or address; ``wait`` seconds to go.

    A DRF ``Throttled``, so API views answer 429 with ``Retry-After``; the admin's login form
    turns it into a form error (``pequeroku.admin``).
    """

    default_code = "throttled"

    def __init__(self, wait: int) -> None:
        super().__init__(
            wait=wait,
            detail=f"Too many failed logins; try again in {wait} seconds.",
        )


@dataclass(frozen=True)
class _Key:
    name: str
    limit: int

    @property
    def counter(self) -> str:
        return f"{KEY_PREFIX}:{self.name}:n"

    @property
    def lock(self) -> str:
        return f"{KEY_PREFIX}:{self.name}:lock"


@dataclass
class LoginAttempt:
    keys: list[_Key]
    # Locks this attempt took; released if it succeeds, left to expire if it fails.
    locks: dict[str, int] = field(default_factory=dict)


def _keys(ip: str | None, username: str) -> list[_Key]:
    # Hashed: cache keys must stay short and free of characters a backend rejects; lower-cased
    # so "Admin" and "admin" share one budget.
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    keys = [_Key(f"user:{digest}", settings.LOGIN_FAILURES_PER_USERNAME)]
    if ip:
        keys.append(_Key(f"ip:{ip}", settings.LOGIN_FAILURES_PER_IP))
    return keys


def lockout_seconds(attempts_over_limit: int) -> int:
    """How long the lock taken by the attempt ``attempts_over_limit`` past the limit lasts."""
    base = settings.LOGIN_LOCKOUT_SECONDS
    ceiling = settings.LOGIN_LOCKOUT_MAX_SECONDS
    if attempts_over_limit >= 32:  # 2**32 * base is past any ceiling
        return ceiling
    return min(base * 2**attempts_over_limit, ceiling)


def _incr(key: str) -> int:
    cache.add(key, 0, timeout=settings.LOGIN_THROTTLE_WINDOW_SECONDS)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_SECONDS)
        return 1


def _decr(key: str) -> None:
    with contextlib.suppress(ValueError):  # already forgotten
        cache.decr(key)


def _release(attempt: LoginAttempt, counted: list[_Key]) -> None:
    for key in counted:
        _decr(key.counter)
    for lock in attempt.locks:
        cache.delete(lock)


def login_attempt_begin(ip: str | None, username: str) -> LoginAttempt:
    """Count one password check for ``ip`` and ``username``, or raise ``LoginThrottled``."""
    now = time.time()
    attempt = LoginAttempt(keys=_keys(ip, username))
    counted: list[_Key] = []
    for key in attempt.keys:
        number = _incr(key.counter)
        counted.append(key)
        if number < key.limit:
            continue
        seconds = lockout_seconds(number - key.limit)
        if cache.add(key.lock, now + seconds, timeout=seconds):
            attempt.locks[key.lock] = seconds
            continue
        # Someone's lock is running: refused, and this attempt does not count.
        until = cache.get(key.lock)
        _release(attempt, counted)
        wait = math.ceil(until - now) if isinstance(until, int | float) else seconds
        raise LoginThrottled(max(1, wait))
    return attempt


def login_attempt_end(attempt: LoginAttempt, *, succeeded: bool) -> None:
    """A success gives its attempt back; a failure starts the key's forgetting window again."""
    if succeeded:
        _release(attempt, attempt.keys)
        return
    for key in attempt.keys:
        held = attempt.locks.get(key.lock, 0)
        cache.touch(key.counter, timeout=settings.LOGIN_THROTTLE_WINDOW_SECONDS + held)


def login_throttle_reset(username: str, ip: str | None = None) -> None:
    """Forget the failures of ``username`` (and ``ip``): an operator lifting a lockout."""
    for key in _keys(ip, username):
        cache.delete_many([key.counter, key.lock])
