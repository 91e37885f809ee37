"""The ASGI lifespan protocol: deferred audit rows are written at shutdown, and at startup
those that a killed process left in the spool.

Uvicorn (also as Gunicorn's worker) sends ``lifespan.shutdown`` on a graceful stop (SIGTERM)
before the process exits; ``atexit`` flushes again for servers that speak no lifespan. A
worker killed outright is replaced by Gunicorn, and the new one's startup ingests its spool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from internal_config.audit_batch import audit_flush, audit_spool_recover

Message = MutableMapping[str, Any]


async def lifespan(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await sync_to_async(_in_own_connection(audit_spool_recover), thread_sensitive=False)()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await sync_to_async(_in_own_connection(audit_flush), thread_sensitive=False)()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _in_own_connection(work: Callable[[], int]) -> Callable[[], int]:
    """``work`` on a one-off thread, whose database connection is closed after it."""

    def run() -> int:
        try:
            return work()
        finally:
            connections.close_all()

    return run
