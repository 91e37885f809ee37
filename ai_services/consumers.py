"""The AI assistant socket ``/ws/ai/<pk>/``: frame parsing, one turn at a time.

Entry point: ``AIConsumer``, on the same base as the IDE sockets
(``vm_manager.ide.base.ContainerSocket``): Origin, access (4401 not logged in, 4403 not
visible, 4404 no such container), the per-user socket cap (4429), connect audit, and access
re-checked while open (4403 once it is lost). The contract's own code: 4401 when no AI uses
are left today. Everything else is delegated to ``ai_services.session.AISession``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from ai_services.session import AISession
from vm_manager.ide.base import ContainerSocket, client_gone, socket_layer_accepts

logger = logging.getLogger(__name__)

BAD_FRAME = 'Messages must be JSON like {"text": "..."}.'


def uses_group(user_pk: int) -> str:
    """Every AI socket of one user, on any worker: told when another socket spends a use."""
    return f"ai-uses-{user_pk}"


class AIConsumer(ContainerSocket):
    socket_name = "ai"
    channel_receive = socket_layer_accepts("ai.uses")  # never a client frame via the layer
    max_frame_bytes = 64 * 1024
    rate_per_second = 5.0
    rate_burst = 20

    session: AISession | None = None
    turn_task: asyncio.Task[None] | None = None
    group: str | None = None

    async def on_connected(self) -> None:
        assert self.container is not None  # noqa: S101 - set by the access check
        self.session = AISession(
            user=self.user,
            container_pk=self.container.pk,
            send=self.send_json,
            ip=self.client_ip,
            user_agent=self.user_agent,
            announce=self.announce_uses if self.channel_layer is not None else None,
        )
        close_code = await self.session.greet()
        if close_code is not None:
            self.session = None
            await self.close(code=close_code)
            return
        if self.channel_layer is not None:
            self.group = uses_group(self.user.pk)
            await self.channel_layer.group_add(self.group, self.channel_name)

    async def on_disconnected(self) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        if self.turn_task is not None and not self.turn_task.done():
            self.turn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.turn_task
        if self.session is not None:
            await self.session.close()

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if self.session is None:
            return
        try:
            payload = json.loads(text_data if text_data is not None else bytes_data or b"")
        except (json.JSONDecodeError, UnicodeDecodeError):
            await self.send_error(BAD_FRAME)
            return
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_error(BAD_FRAME)
            return
        if self.turn_running():
            await self.send_error("The assistant is still answering; wait for it to finish.")
            return
        # A turn runs beside the receive loop so a disconnect can cancel it (and give the
        # reserved use back) instead of waiting for the provider.
        self.session.busy = True
        self.turn_task = asyncio.create_task(self._turn(self.session, text))

    async def _turn(self, session: AISession, text: str) -> None:
        try:
            close_code = await session.handle_text(text)
        except Exception as exc:
            if client_gone(exc):
                logger.debug("AI socket: the client left during a turn")
                return
            logger.exception("AI turn failed on container %s", session.container_pk)
            await self.send_error("The assistant failed unexpectedly; try again.")
            return
        if close_code is not None:
            await self.close(code=close_code)

    async def announce_uses(self, uses_left: int) -> None:
        await self.channel_layer.group_send(
            uses_group(self.user.pk),
            {"type": "ai.uses", "ai_uses_left_today": uses_left, "origin": self.channel_name},
        )

    async def ai_uses(self, message: dict[str, Any]) -> None:
        """Another socket of this user spent a use: refresh the count shown here.

        Skipped on the socket that spent it (it already announced) and while this socket's own
        turn runs (that turn ends with a fresh count anyway), so a turn's events stay in order.
        """
        if message["origin"] == self.channel_name or self.turn_running():
            return
        await self.send_json(
            {"event": "connected", "ai_uses_left_today": message["ai_uses_left_today"]}
        )

    def turn_running(self) -> bool:
        return self.session is not None and self.session.busy

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))

    async def send_error(self, message: str, req_id: Any = None) -> None:
        await self.send_json({"event": "error", "message": message})

    async def send_info(self, message: str) -> None:
        await self.send_json({"event": "info", "message": message})
