"""The ASGI lifespan protocol: nothing to start; at shutdown, deferred audit rows are written.

Uvicorn (also as Gunicorn's worker) sends ``lifespan.shutdown`` on a graceful stop (SIGTERM)
before the process exits; ``atexit`` flushes again for servers that speak no lifespan.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.sync import sync_to_async

from internal_config.audit_batch import audit_flush

Message = MutableMapping[str, Any]


async def lifespan(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await sync_to_async(audit_flush, thread_sensitive=False)()
            await send({"type": "lifespan.shutdown.complete"})
            return
