"""``/ws/containers/{pk}/``: several terminal sessions of one container over one socket.

Client frames: plain text (a command for the active session), binary (raw keystrokes for the
active session), ``{"data", "sid"?, "broadcast"?}``, ``{"control": "open"|"close"|"focus",
"sid"}`` and ``{"control": "resize", "sid", "cols", "rows"}``. Server events: ``stream``,
``info`` and ``error`` (see docs/sockets.md).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pequeroku.layer_guard import channel_layer_accepts
from vm_manager.console import ConsoleError, ConsoleSessions, input_bytes
from vm_manager.errors import ContainerNotRunning
from vm_manager.guest.access import driver_for

from .base import ContainerSocket

AUDIT_ACTIONS = {"ctrlc": "ws.ctrlc", "ctrld": "ws.ctrld"}


class ConsoleConsumer(ContainerSocket):
    socket_name = "console"
    channel_receive = channel_layer_accepts()  # never a client frame via the layer
    max_frame_bytes = 64 * 1024
    rate_per_second = 100.0
    rate_burst = 200

    sessions: ConsoleSessions | None = None

    async def on_connected(self) -> None:
        assert self.container is not None  # noqa: S101 - set by the access check
        try:
            self.sessions = ConsoleSessions(
                driver_for(self.container), self.container.vm_id, self._stream, self._lost
            )
            await self.sessions.open("s1")
        except Exception as exc:
            await self._report(exc)
        await self.send_json(
            {
                "type": "info",
                "message": "Connected",
                "sessions": self.sessions.sids if self.sessions else [],
                "active": self.sessions.active if self.sessions else None,
            }
        )

    async def on_disconnected(self) -> None:
        if self.sessions is not None:
            await self.sessions.close_all()

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if self.sessions is None:
            raise ContainerNotRunning()
        if text_data is None:
            await self.sessions.write(None, bytes_data or b"")
            return
        try:
            payload = json.loads(text_data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):  # plain text, even if it happens to be JSON ("42")
            await self._command(text_data, sid=None, broadcast=False)
        elif "control" in payload:
            await self._control(payload)
        elif isinstance(payload.get("data"), str):
            await self._command(
                payload["data"], sid=payload.get("sid"), broadcast=payload.get("broadcast") is True
            )
        else:
            raise ConsoleError("Expected 'data' (a string) or 'control'.")

    async def _command(self, text: str, *, sid: Any, broadcast: bool) -> None:
        assert self.sessions is not None  # noqa: S101
        data = input_bytes(text)
        if broadcast:
            targets = await self.sessions.broadcast(data)
        else:
            targets = [await self.sessions.write(sid, data)]
        assert self.container is not None  # noqa: S101
        await self.audit(
            AUDIT_ACTIONS.get(text, "ws.cmd"),
            self.container.pk,
            text,
            metadata={"sids": targets, "broadcast": broadcast},
        )

    async def _control(self, payload: dict[str, Any]) -> None:
        assert self.sessions is not None  # noqa: S101
        control, sid = payload.get("control"), payload.get("sid")
        if control == "open":
            await self.sessions.open(sid)
            await self._info("session-opened", sid)
        elif control == "close":
            await self.sessions.close(sid)
            await self._info("session-closed", sid)
        elif control == "focus":
            self.sessions.focus(sid)
            await self._info("session-focused", sid)
        elif control == "resize":
            await self.sessions.resize(sid, payload.get("cols"), payload.get("rows"))
        else:
            raise ConsoleError(f"Unknown control '{control}'.")

    async def _info(self, message: str, sid: str, **extra: Any) -> None:
        assert self.sessions is not None  # noqa: S101
        event = {"type": "info", "message": message, "sid": sid, "active": self.sessions.active}
        await self.send_json({**event, **extra})

    async def _stream(self, sid: str, text: str) -> None:
        # Output racing a client that just left: the server refuses the send before our
        # disconnect handler runs and cancels the reader, so there is nobody left to tell.
        with contextlib.suppress(Exception):
            await self.send_json({"type": "stream", "sid": sid, "payload": text})

    async def _lost(self, sid: str) -> None:
        with contextlib.suppress(Exception):  # the socket may be closing too
            await self._info("session-closed", sid, reason="the session ended")

    async def send_error(self, message: str, req_id: Any = None) -> None:
        await self.send_json({"type": "error", "message": message})
