"""File revision numbers shared by every worker, kept in the channel layer's backend.

Entry points: ``revision_store(layer)`` and the ``RevisionStore`` protocol.

Editors of one container may be connected to different workers, so the counter that detects a
stale ``prev_rev`` must live where all of them look: with ``RedisChannelLayer`` it is a Redis
hash per container on the layer's own connection (same hosts, same prefix); with the in-memory
layer (one process, tests, development) a process-local dict is that place.
"""

from __future__ import annotations

from typing import Any, Protocol

from channels_redis.core import RedisChannelLayer

REVISION_TTL_SECONDS = 30 * 24 * 3600  # a container untouched for a month starts again at 0

# KEYS[1] = hash of the container, ARGV[1] = path, ARGV[2] = expected revision or "".
# Returns {1, new} after bumping, or {0, current} when the expected revision is stale.
_COMPARE_AND_BUMP = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if ARGV[2] ~= '' and current ~= tonumber(ARGV[2]) then
  return {0, current}
end
local new = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, new}
"""


class RevisionStore(Protocol):
    async def get(self, container_pk: int, path: str) -> int:
        """The current revision of ``path`` (0 when it was never changed through the editor)."""
        ...

    async def bump(self, container_pk: int, path: str, expected: int | None = None) -> int | None:
        """Increment and return the revision; ``None`` (no change) if it is not ``expected``."""
        ...


class LocalRevisionStore:
    """One process: the in-memory channel layer cannot span workers, so neither need this."""

    _revisions: dict[tuple[int, str], int] = {}  # noqa: RUF012 - process-wide on purpose

    @classmethod
    def reset(cls) -> None:
        cls._revisions.clear()

    async def get(self, container_pk: int, path: str) -> int:
        return self._revisions.get((container_pk, path), 0)

    async def bump(self, container_pk: int, path: str, expected: int | None = None) -> int | None:
        # No await between the read and the write: atomic on the event loop.
        key = (container_pk, path)
        current = self._revisions.get(key, 0)
        if expected is not None and current != expected:
            return None
        self._revisions[key] = current + 1
        return current + 1


class RedisRevisionStore:
    """A hash ``<prefix>revisions:<pk>`` on the channel layer's Redis; bumps are one script."""

    def __init__(self, layer: Any) -> None:
        self._layer = layer

    def _key(self, container_pk: int) -> str:
        return f"{self._layer.prefix}revisions:{container_pk}"

    def _connection(self, key: str) -> Any:
        return self._layer.connection(self._layer.consistent_hash(key))

    async def get(self, container_pk: int, path: str) -> int:
        key = self._key(container_pk)
        value = await self._connection(key).hget(key, path)
        return int(value or 0)

    async def bump(self, container_pk: int, path: str, expected: int | None = None) -> int | None:
        key = self._key(container_pk)
        ok, value = await self._connection(key).eval(
            _COMPARE_AND_BUMP,
            1,
            key,
            path,
            "" if expected is None else str(expected),
            str(REVISION_TTL_SECONDS),
        )
        return int(value) if int(ok) else None


def revision_store(layer: Any) -> RevisionStore:
    """The store that lives in ``layer``'s backend."""
    if isinstance(layer, RedisChannelLayer):
        return RedisRevisionStore(layer)
    return LocalRevisionStore()
