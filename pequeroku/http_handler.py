"""Plain HTTP under ASGI at WSGI's cost: each Django request makes one trip to a thread.

Entry point: ``ThreadedASGIHandler(threads)``, the ``http`` application of ``pequeroku.asgi``.

Why: Django's own ``ASGIHandler`` runs its middleware in async mode. Every middleware written
the classic way (``process_request``/``process_response``, i.e. all of Django's) and every sync
view then crosses from the event loop to a thread and back, and each request gets a fresh
thread of its own (``ThreadSensitiveContext``) holding a fresh database connection:
``bench/api.py --profile`` counted 34 crossings and 2 thread starts for one trivial request,
about ten times the CPU of the same request under WSGI. Every view of this project is sync, so
this handler does what a threaded WSGI server does: the request-started signal, the whole
middleware chain in sync mode, the view, rendering and the request-finished signal run in one
call on a bounded pool of reused threads (each keeping its database connection for
``CONN_MAX_AGE``, like a Gunicorn thread); the event loop only reads the body and writes the
answer.

Kept from Django's handler: the body is read on the loop (``BodySizeLimit`` stops large ones
before), the request object is Django's ``ASGIRequest`` (views that stream from a node check
for it and hand back async iterators, consumed on the loop), bad requests answer 400/413, a
client that disconnects while a streaming body is sent stops the stream. ``async_to_sync``
inside a view still runs its coroutine on the server's loop (the thread is entered through
``sync_to_async``), so loop-bound clients such as the channel layer keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from tempfile import SpooledTemporaryFile
from typing import Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ThreadedASGIHandler(ASGIHandler):
    """Django's ASGI handler with the sync request path run in one thread call."""

    def __init__(self, threads: int) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")
        self._respond = sync_to_async(self.respond, thread_sensitive=False, executor=self.executor)
        self._close = sync_to_async(_close, thread_sensitive=False, executor=self.executor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await self._respond(scope, body_file)
        if not response.streaming:
            await self.send_response(response, send)
            return
        sending = asyncio.ensure_future(self.send_response(response, send))
        listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((sending, listening), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # A disconnect stops the stream (its iterator is closed by the cancellation).
            for task in (listening, sending):
                task.cancel()
            await asyncio.gather(listening, sending, return_exceptions=True)
            await self._close(response)
        if not sending.cancelled() and sending.exception() is not None:
            raise sending.exception()  # type: ignore[misc]

    def respond(self, scope: Scope, body_file: SpooledTemporaryFile[bytes]) -> HttpResponseBase:
        """The whole Django side of one request, in a pool thread."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
        else:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if response.streaming:
            # The body comes from a node, not the database: this thread's connection is
            # released now as at the end of a request (its close runs later, on any thread).
            close_old_connections()
        else:
            # The content is bytes already: finish the request in the thread that served it
            # (request_finished checks this thread's database connection).
            response.close()
        return response


def _close(response: HttpResponseBase) -> None:
    response.close()
