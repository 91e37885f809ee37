"""Several PTY sessions of one console socket, multiplexed by session id.

Entry points: ``ConsoleSessions`` (``open``, ``close``, ``focus``, ``resize``, ``write``,
``broadcast``, ``close_all``) and ``input_bytes`` (what a text command sends to the PTY).

Each session is a ``TerminalSession`` of the node driver plus one reader task that forwards its
output through ``on_output``; all node I/O is async, so a busy terminal never blocks the loop.
When the node ends a session by itself, the session is removed and ``on_lost`` reports it.
``close_all`` (socket disconnect) cancels every reader and closes every terminal.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pequeroku.errors import DomainError
from vm_manager.drivers import NodeDriver, TerminalSession

logger = logging.getLogger(__name__)

MAX_SESSIONS = 8
SID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")
MIN_SIZE, MAX_SIZE = 1, 1000
CONTROL_KEYS = {"ctrlc": b"\x03", "ctrld": b"\x04"}

OutputCallback = Callable[[str, str], Awaitable[None]]
LostCallback = Callable[[str], Awaitable[None]]


class TerminalSlots(Protocol):
    """A per-user cap on terminals (``vm_manager.ide.limits.terminal_slots``)."""

    def claim(self, user_pk: int) -> None: ...

    def release(self, user_pk: int) -> None: ...


class ConsoleError(DomainError):
    code = "console_error"
    default_message = "The console request failed."


def input_bytes(text: str) -> bytes:
    """``ctrlc``/``ctrld`` become the control character; any other text is a command line.

    The frontend sends whole commands (``ls``), so a line without its newline gets one; binary
    frames (raw keystrokes) bypass this and reach the PTY unchanged.
    """
    if text in CONTROL_KEYS:
        return CONTROL_KEYS[text]
    return (text if text.endswith(("\n", "\r")) else text + "\n").encode()


def valid_size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConsoleError(f"'{name}' must be an integer")
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise ConsoleError(f"'{name}' must be between {MIN_SIZE} and {MAX_SIZE}")
    return value


@dataclass
class _Session:
    terminal: TerminalSession
    reader: asyncio.Task[None] | None = None


class ConsoleSessions:
    def __init__(
        self,
        driver: NodeDriver,
        vm_id: str,
        on_output: OutputCallback,
        on_lost: LostCallback,
        *,
        slots: TerminalSlots | None = None,
        user_pk: int = 0,
    ) -> None:
        """``slots``: each open session holds one of ``user_pk``'s terminal slots."""
        self._slots = slots
        self._user_pk = user_pk
        self._driver = driver
        self._vm_id = vm_id
        self._on_output = on_output
        self._on_lost = on_lost
        self._sessions: dict[str, _Session] = {}
        self.active: str | None = None

    @property
    def sids(self) -> list[str]:
        return list(self._sessions)

    def _known(self, sid: object) -> str:
        if not isinstance(sid, str) or sid not in self._sessions:
            raise ConsoleError(f"Unknown session '{sid}'.")
        return sid

    async def open(self, sid: object, cols: int = 80, rows: int = 24) -> str:
        """Open a PTY shell in ``/app`` as ``sid`` and focus it."""
        if not isinstance(sid, str) or not SID_PATTERN.match(sid):
            raise ConsoleError("'sid' must be 1-32 letters, digits or ._:-")
        if sid in self._sessions:
            raise ConsoleError(f"Session '{sid}' already exists.")
        if len(self._sessions) >= MAX_SESSIONS:
            raise ConsoleError(f"At most {MAX_SESSIONS} sessions per console.")
        if self._slots is not None:
            self._slots.claim(self._user_pk)
        try:
            terminal = await self._driver.open_terminal(self._vm_id, cols, rows)
        except BaseException:
            self._release()
            raise
        if sid in self._sessions:  # opened twice concurrently: keep the first
            self._release()
            await terminal.close()
            raise ConsoleError(f"Session '{sid}' already exists.")
        session = self._sessions[sid] = _Session(terminal)
        session.reader = asyncio.create_task(self._pump(sid, session), name=f"console-{sid}")
        self.active = sid
        return sid

    async def _pump(self, sid: str, session: _Session) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while chunk := await session.terminal.read():
                text = decoder.decode(chunk)
                if text:
                    await self._on_output(sid, text)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("console session %s ended with an error", sid, exc_info=True)
        # The node ended it (shell exited, agent or VM gone): an explicit close never gets here
        # because it removes the session and cancels this task first.
        if self._sessions.get(sid) is session:
            del self._sessions[sid]
            self._release()
            self._refocus(sid)
            with contextlib.suppress(Exception):
                await session.terminal.close()
            await self._on_lost(sid)

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release(self._user_pk)

    def _refocus(self, sid: str) -> None:
        if self.active == sid:
            self.active = next(iter(self._sessions), None)

    async def close(self, sid: object) -> str:
        name = self._known(sid)
        session = self._sessions.pop(name)
        self._release()
        self._refocus(name)
        await _stop(session)
        return name

    def focus(self, sid: object) -> str:
        self.active = self._known(sid)
        return self.active

    async def resize(self, sid: object, cols: object, rows: object) -> None:
        name = self._known(sid)
        await self._sessions[name].terminal.resize(
            valid_size(cols, "cols"), valid_size(rows, "rows")
        )

    async def write(self, sid: object, data: bytes) -> str:
        """Send ``data`` to ``sid``, or to the active session when ``sid`` is None."""
        target = self.active if sid is None else sid
        if target is None:
            raise ConsoleError("No active session.")
        name = self._known(target)
        await self._sessions[name].terminal.write(data)
        return name

    async def broadcast(self, data: bytes) -> list[str]:
        sessions = list(self._sessions.items())
        await asyncio.gather(*(session.terminal.write(data) for _, session in sessions))
        return [sid for sid, _ in sessions]

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for _ in sessions:
            self._release()
        self.active = None
        await asyncio.gather(*(_stop(session) for session in sessions))


async def _stop(session: _Session) -> None:
    if session.reader is not None and not session.reader.done():
        session.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await session.reader
    try:
        await session.terminal.close()
    except Exception:
        logger.warning("could not close a console session cleanly", exc_info=True)
