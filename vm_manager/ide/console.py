"""``/ws/containers/{pk}/``: the terminals of one container, in one of two protocols.

JSON mode (no query string), several sessions over one socket. Client frames: plain text (a
command for the active session), binary (raw keystrokes for the active session), ``{"data",
"sid"?, "broadcast"?}``, ``{"control": "open"|"close"|"focus", "sid"}`` and ``{"control":
"resize", "sid", "cols", "rows"}``. Server events: ``stream``, ``info`` and ``error``.

Raw mode (``?sid=<sid>``), one session per socket, as the original project's newer frontend
speaks: keystrokes in text or binary frames reach the PTY unchanged, a text frame that is
exactly ``__RESIZE__ <cols>x<rows>`` resizes it, and the output comes back as raw text frames
(see docs/sockets.md).
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any
from urllib.parse import parse_qs

from vm_manager.errors import ContainerNotRunning
from vm_manager.guest.access import driver_for
from vm_manager.ide.terminals import (
    SID_PATTERN,
    ConsoleError,
    ConsoleSessions,
    input_bytes,
    valid_size,
)

from .base import ContainerSocket, socket_layer_accepts
from .command_audit import CommandAudit
from .limits import CLOSE_TOO_MANY, TooManyTerminals, terminal_slots

AUDIT_ACTIONS = {"ctrlc": "ws.ctrlc", "ctrld": "ws.ctrld"}
RESIZE = re.compile(r"^__RESIZE__ (\d{1,4})x(\d{1,4})$")
CLOSE_BAD_REQUEST = 4400


def raw_sid(scope: dict[str, Any]) -> str | None:
    """The ``sid`` query parameter (raw mode), or None (JSON mode)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    values = query.get("sid")
    return values[0] if values else None


class ConsoleConsumer(ContainerSocket):
    socket_name = "console"
    channel_receive = socket_layer_accepts()  # never a client frame via the layer
    max_frame_bytes = 64 * 1024
    rate_per_second = 100.0
    rate_burst = 200

    sessions: ConsoleSessions | None = None

    @property
    def raw(self) -> str | None:
        """The raw mode's session id; None in JSON mode."""
        return raw_sid(self.scope)

    async def on_connected(self) -> None:
        assert self.container is not None  # noqa: S101 - set by the access check
        self.commands = CommandAudit(self._write_command_audit)
        if self.raw is not None:
            await self._connect_raw(self.raw)
            return
        try:
            self.sessions = self._sessions(self._stream, self._lost)
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

    def _sessions(self, on_output: Any, on_lost: Any) -> ConsoleSessions:
        assert self.container is not None  # noqa: S101
        return ConsoleSessions(
            driver_for(self.container),
            self.container.vm_id,
            on_output,
            on_lost,
            slots=terminal_slots,
            user_pk=self.user.pk,
        )

    async def on_disconnected(self) -> None:
        if self.sessions is not None:
            await self.sessions.close_all()
        if getattr(self, "commands", None) is not None:
            await self.commands.flush()

    # -- raw mode ------------------------------------------------------------------------

    async def _connect_raw(self, sid: str) -> None:
        if not SID_PATTERN.match(sid):
            await self.send(text_data="'sid' must be 1-32 letters, digits or ._:-\r\n")
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        try:
            self.sessions = self._sessions(self._raw_output, self._raw_lost)
            await self.sessions.open(sid)
        except TooManyTerminals as refused:
            await self.send(text_data=f"{refused.message}\r\n")
            await self.close(code=CLOSE_TOO_MANY)
        except Exception as exc:
            await self._report(exc)
            await self.close(code=1011)

    async def _raw_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        assert self.sessions is not None and self.raw is not None  # noqa: S101
        if text_data is not None:
            resize = RESIZE.match(text_data)
            if resize:
                cols = valid_size(int(resize.group(1)), "cols")
                rows = valid_size(int(resize.group(2)), "rows")
                await self.sessions.resize(self.raw, cols, rows)
                return
            data = text_data.encode()
        else:
            data = bytes_data or b""
        await self.sessions.write(self.raw, data)

    async def _raw_output(self, sid: str, text: str) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.send(text_data=text)

    async def _raw_lost(self, sid: str) -> None:
        with contextlib.suppress(Exception):
            await self.close(code=1000)

    # -- JSON mode -----------------------------------------------------------------------

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if self.sessions is None:
            raise ContainerNotRunning()
        if self.raw is not None:
            await self._raw_frame(text_data, bytes_data)
            return
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
        await self.commands.record(
            AUDIT_ACTIONS.get(text, "ws.cmd"), text, {"sids": targets, "broadcast": broadcast}
        )

    async def _write_command_audit(self, action: str, text: str, metadata: dict[str, Any]) -> None:
        assert self.container is not None  # noqa: S101
        await self.audit(action, self.container.pk, text, metadata=metadata)

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

    async def send_info(self, message: str) -> None:
        if self.raw is not None:  # raw mode: a line on the terminal
            await self.send(text_data=f"\r\n[{message}]\r\n")
            return
        await self.send_json({"type": "info", "message": message})

    async def send_error(self, message: str, req_id: Any = None) -> None:
        if self.raw is not None:  # raw mode: no JSON on this socket, ever
            await self.send(text_data=f"\r\n[{message}]\r\n")
            return
        await self.send_json({"type": "error", "message": message})
