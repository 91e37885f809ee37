"""``/ws/fs/{pk}/``: the file editor of a container; every path under ``/app``.

Client frames: ``{"action", "req_id", ...}``. Replies: ``ok`` / ``error`` with the request's
``req_id``; changes are broadcast to the group ``container-fs-{pk}`` (see docs/sockets.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from vm_manager.guest.access import driver_for
from vm_manager.guest.files import editor_group
from vm_manager.guest.revisions import revision_store
from vm_manager.ide.files import (
    MAX_WRITE_BYTES,
    Editor,
    EditorResult,
    RevisionConflict,
    workspace_initialize_once,
)

from .base import ContainerSocket, socket_layer_accepts

logger = logging.getLogger(__name__)

Handler = Callable[[Editor, dict[str, Any]], Awaitable[EditorResult]]

ACTIONS: dict[str, Handler] = {
    "list_dirs": lambda e, c: e.list_dirs(c.get("path")),
    "read_file": lambda e, c: e.read_file(c.get("path")),
    "create_dir": lambda e, c: e.create_dir(c.get("path")),
    "write_file": lambda e, c: e.write_file(c.get("path"), c.get("content"), c.get("prev_rev")),
    "move_path": lambda e, c: e.move_path(c.get("src"), c.get("dst")),
    "delete_path": lambda e, c: e.delete_path(c.get("path")),
    "search": lambda e, c: e.search(
        c.get("root"),
        c.get("pattern"),
        c.get("case"),
        c.get("include_globs"),
        c.get("exclude_dirs"),
    ),
}


def group_name(container_pk: int) -> str:
    return editor_group(container_pk)


class EditorConsumer(ContainerSocket):
    socket_name = "editor"
    channel_receive = socket_layer_accepts("fs.broadcast")  # never a client frame via the layer
    # A 2 MiB file grows when JSON-escaped; the content limit itself is checked by the editor.
    max_frame_bytes = 4 * MAX_WRITE_BYTES
    rate_per_second = 50.0
    rate_burst = 100

    group: str = ""
    initializing: asyncio.Task[None] | None = None

    async def on_connected(self) -> None:
        assert self.container is not None  # noqa: S101 - set by the access check
        self.group = group_name(self.container.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json({"event": "connected"})
        # The first connect writes the default template; requests are answered meanwhile
        # (its files get revisions but no broadcast). Exactly once stays the function's rule.
        self.initializing = asyncio.create_task(
            self._initialize_workspace(), name=f"editor-template-{self.container.pk}"
        )

    async def _initialize_workspace(self) -> None:
        assert self.container is not None  # noqa: S101
        try:
            written = await workspace_initialize_once(self.container)
        except Exception as exc:
            with contextlib.suppress(Exception):  # the client may have left
                await self._report(exc)
            return
        if written is not None:
            await self.audit(
                "template.apply",
                self.container.pk,
                "default template applied on first connect",
                metadata={"files_count": written},
            )

    async def on_disconnected(self) -> None:
        # A template being written is left to finish (or to reset its flag when it fails):
        # cancelling it halfway would mark a half-written workspace as initialised.
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def fs_broadcast(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if text_data is None:
            await self.send_error("binary frames are not supported")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_error("invalid JSON")
            return
        if not isinstance(content, dict):
            await self.send_error("expected a JSON object")
            return
        req_id, action = content.get("req_id"), content.get("action")
        handler = ACTIONS.get(action) if isinstance(action, str) else None
        if handler is None:
            await self.send_error(f"unknown action: {action}", req_id)
            return
        try:
            result = await handler(self._editor(), content)
        except RevisionConflict as conflict:
            await self.send_json(
                {"event": "error", "req_id": req_id, "error": "conflict", "rev": conflict.rev}
            )
            return
        except Exception as exc:
            await self._report(exc, req_id)
            return
        await self._answer(action, req_id, result)

    async def _answer(self, action: str, req_id: Any, result: EditorResult) -> None:
        reply: dict[str, Any] = {"event": "ok", "req_id": req_id}
        if result.data is not None:
            reply["data"] = result.data
        if result.rev is not None:
            reply["rev"] = result.rev
        await self.send_json(reply)
        if result.broadcast is not None:
            await self.channel_layer.group_send(
                self.group, {"type": "fs.broadcast", "payload": result.broadcast}
            )
            assert self.container is not None  # noqa: S101
            await self.audit(
                f"container.{action}", self.container.pk, action, metadata=result.audit
            )

    def _editor(self) -> Editor:
        assert self.container is not None  # noqa: S101
        return Editor(
            container_pk=self.container.pk,
            vm_id=self.container.vm_id,
            driver=driver_for(self.container),
            revisions=revision_store(self.channel_layer),
        )

    async def send_error(self, message: str, req_id: Any = None) -> None:
        await self.send_json({"event": "error", "req_id": req_id, "error": message})

    async def send_info(self, message: str) -> None:
        await self.send_json({"event": "info", "message": message})
