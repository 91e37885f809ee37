"""Console commands into the audit trail: at most one row a second per socket.

Entry point: ``CommandAudit(write)`` with ``record(action, text, metadata)`` and ``flush()``.

The first command after a quiet second is written at once, as its own row (``ws.cmd``,
``ws.ctrlc``, ``ws.ctrld``). Commands that follow within the second are kept and written
together when it ends, as one ``ws.cmd`` row whose message holds their lines and whose
metadata lists each (``batched``: how many; at most ``MAX_BATCHED`` listed, the rest
counted). A script that types a thousand lines a second writes one row a second; ``flush``
(on disconnect) writes what is still kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

Write = Callable[[str, str, dict[str, Any]], Awaitable[None]]

WINDOW_SECONDS = 1.0
MAX_BATCHED = 50
MAX_MESSAGE = 500


class CommandAudit:
    def __init__(self, write: Write, window: float = WINDOW_SECONDS) -> None:
        self._write = write
        self._window = window
        self._last_write = float("-inf")
        self._pending: list[dict[str, Any]] = []
        self._dropped = 0
        self._timer: asyncio.Task[None] | None = None

    async def record(self, action: str, text: str, metadata: dict[str, Any]) -> None:
        now = time.monotonic()
        if not self._pending and now - self._last_write >= self._window:
            self._last_write = now
            await self._write(action, text, metadata)
            return
        if len(self._pending) < MAX_BATCHED:
            self._pending.append({"action": action, "text": text[:MAX_MESSAGE], **metadata})
        else:
            self._dropped += 1
        if self._timer is None:
            delay = max(0.0, self._last_write + self._window - now)
            self._timer = asyncio.create_task(self._flush_later(delay), name="console-audit")

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        await self._write_pending()

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        batch, dropped = self._pending, self._dropped
        self._pending, self._dropped = [], 0
        self._last_write = time.monotonic()
        message = "\n".join(item["text"] for item in batch)[:MAX_MESSAGE]
        await self._write("ws.cmd", message, {"batched": len(batch) + dropped, "commands": batch})

    async def flush(self) -> None:
        """Write what is kept now (the socket is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self._write_pending()
