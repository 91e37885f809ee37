"""One Redis connection pool per process for the cache (``CACHES``'s ``pool_class``).

Django keeps its cache objects per context, not per thread (``django.core.cache.caches`` is an
asgiref ``Local`` that is not thread-critical), and every ``RedisCache`` object builds its own
connection pool. Under ``pequeroku.http_handler`` each request runs in a context of its own, so
each request built a new pool and opened a new TCP connection to Redis (with its handshake) for
its throttle check: 8% of the web tier's CPU in a 150-user load run. Every cache object of the
process asking for the same URL and options now gets the same pool; redis-py's pool is
thread-safe and starts afresh in a forked child.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import redis


class SharedConnectionPool(redis.ConnectionPool):
    _shared: ClassVar[dict[tuple[str, str], SharedConnectionPool]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SharedConnectionPool:  # type: ignore[override]
        key = (url, repr(sorted(kwargs.items())))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
        return pool
