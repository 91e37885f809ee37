"""The AI assistant socket ``/ws/ai/<pk>/``: access checks, frame parsing, one turn at a time.

Entry point: ``AIConsumer``. Close codes: 4401 not logged in (or no AI uses left today, as the
contract says), 4403 container not visible to the user, 4404 no such container. The socket is
accepted before closing with a code, so the browser sees the code instead of a refused
handshake. Everything else is delegated to ``ai_services.session.AISession``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from ai_services import services
from ai_services.errors import AIError
from ai_services.session import AISession
from internal_config.audit import scope_client_info
from pequeroku.layer_guard import channel_layer_accepts

logger = logging.getLogger(__name__)


def uses_group(user_pk: int) -> str:
    """Every AI socket of one user, on any worker: told when another socket spends a use."""
    return f"ai-uses-{user_pk}"


class AIConsumer(AsyncWebsocketConsumer):
    channel_receive = channel_layer_accepts("ai.uses")  # never a client frame via the layer
    session: AISession | None = None
    turn_task: asyncio.Task[None] | None = None
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            container_pk = int(self.scope["url_route"]["kwargs"]["pk"])
            await database_sync_to_async(services.ai_container_for_user)(user, container_pk)
        except AIError as exc:
            await self.close(code=exc.close_code)
            return
        ip, user_agent = scope_client_info(self.scope)
        self.session = AISession(
            user=user,
            container_pk=container_pk,
            send=self.send_json,
            ip=ip,
            user_agent=user_agent,
            announce=self.announce_uses if self.channel_layer is not None else None,
        )
        close_code = await self.session.greet()
        if close_code is not None:
            await self.close(code=close_code)
            return
        if self.channel_layer is not None:
            self.group = uses_group(user.pk)
            await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.turn_task is not None and not self.turn_task.done():
            self.turn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.turn_task

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is None:
            return
        try:
            payload = json.loads(text_data if text_data is not None else bytes_data or b"")
        except (json.JSONDecodeError, UnicodeDecodeError):
            await self.send_error('Messages must be JSON like {"text": "..."}.')
            return
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_error('Messages must be JSON like {"text": "..."}.')
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
        except Exception:
            logger.exception("AI turn failed on container %s", session.container_pk)
            await self.send_error("The assistant failed unexpectedly; try again.")
            return
        if close_code is not None:
            await self.close(code=close_code)

    async def announce_uses(self, uses_left: int) -> None:
        await self.channel_layer.group_send(
            uses_group(self.scope["user"].pk),
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

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))

    async def send_error(self, message: str) -> None:
        await self.send_json({"event": "error", "message": message})
