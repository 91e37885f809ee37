"""One AI socket's conversation: greeting, turns and ``/clear``, as wire events.

Entry points: ``AISession.greet()``, ``AISession.handle_text(text)``, ``AISession.close()``
(when the socket goes). The first two return the close code when the socket must close (4401
no uses left, as the contract asks; 4403/4404 when the container went out of reach since the
socket opened), ``None`` to keep it open.

Wire events (see docs/ai.md): a turn sends tool announcements and the answer as
``start_text`` / ``text``... / ``finish_text`` triples, then ``memory_data`` and a fresh
``connected``. A provider failure ends the open triple with a readable message and a
``finish_text``; the reserved use goes back only when the provider had produced nothing and no
tool had run (otherwise it stays spent, as it does when the socket goes away mid-turn).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from openai import AsyncOpenAI

from ai_services import services
from ai_services.agents import AgentAnswer, DevAgent, ProviderFailure, ToolContext
from ai_services.agents.tools import tool_label
from ai_services.errors import AIError, AINoUsesLeft
from ai_services.utils import ProviderConfig, get_openai_client
from internal_config.audit import audit_log_ws
from pequeroku.errors import DomainError
from vm_manager.drivers import NodeDriver
from vm_manager.guest.access import driver_for

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 3000
CLEAR_COMMAND = "/clear"

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _AnswerStream:
    """Keeps the start/text/finish triples well formed while a turn streams."""

    send: Send
    open: bool = False
    sent_text: bool = False
    streamed: list[str] = field(default_factory=list)

    async def tool_started(self, name: str) -> None:
        await self.close()
        await triple(self.send, tool_label(name))

    async def text_chunk(self, content: str) -> None:
        if not self.open:
            await self.send({"event": "start_text", "role": "assistant"})
            self.open = True
        self.sent_text = True
        self.streamed.append(content)
        await self.send({"event": "text", "content": content})

    async def close(self) -> None:
        if self.open:
            await self.send({"event": "finish_text"})
            self.open = False


async def triple(send: Send, content: str, role: str = "assistant") -> None:
    await send({"event": "start_text", "role": role})
    await send({"event": "text", "content": content})
    await send({"event": "finish_text"})


@dataclass
class AISession:
    user: Any
    container_pk: int
    send: Send
    ip: str | None = None
    user_agent: str = ""
    # Called with the new count after a turn spends a use, to tell the user's other sockets.
    announce: Callable[[int], Awaitable[None]] | None = None
    # True from a message's arrival until its answer is complete; the final ``connected`` of
    # a turn clears it before it is sent, so a client answering that event is never "busy".
    busy: bool = False
    _client: AsyncOpenAI | None = field(default=None, repr=False)
    _client_config: ProviderConfig | None = field(default=None, repr=False)

    async def connected(self, uses_left: int) -> None:
        self.busy = False
        await self.send({"event": "connected", "ai_uses_left_today": uses_left})

    async def greet(self) -> int | None:
        """History replay then ``connected``; without uses left, an explanation and 4401."""
        uses_left = await database_sync_to_async(services.ai_uses_left)(self.user)
        if uses_left <= 0:
            await triple(self.send, AINoUsesLeft.default_message)
            await self.connected(0)
            return AINoUsesLeft.close_code
        memory = await database_sync_to_async(services.ai_memory_get)(self.user, self.container_pk)
        for message in memory:
            await triple(self.send, message["content"], role=message["role"])
        await self.connected(uses_left)
        return None

    async def handle_text(self, text: str) -> int | None:
        self.busy = True
        try:
            return await self._handle_text(text)
        finally:
            self.busy = False

    async def _handle_text(self, text: str) -> int | None:
        if text.strip() == CLEAR_COMMAND:
            await self.clear()
            return None
        if len(text) > MAX_PROMPT_CHARS:
            await triple(
                self.send,
                f"Your message has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}. "
                "Please shorten it and send it again.",
            )
            return None
        return await self.turn(text)

    async def clear(self) -> None:
        await database_sync_to_async(services.ai_memory_clear)(self.user, self.container_pk)
        await triple(self.send, "Conversation memory cleared.")
        await self.send({"event": "memory_data", "memory": []})
        uses_left = await database_sync_to_async(services.ai_uses_left)(self.user)
        await self.connected(uses_left)

    async def turn(self, prompt: str) -> int | None:
        try:
            start = await database_sync_to_async(services.ai_turn_begin)(
                self.user, self.container_pk, prompt
            )
        except AINoUsesLeft as exc:
            await triple(self.send, exc.message)
            await self.connected(0)
            return exc.close_code
        except AIError as exc:  # deleted, or no longer shared with this user
            await triple(self.send, exc.message)
            return exc.close_code
        stream = _AnswerStream(self.send)
        progress = AgentAnswer(text="", model=start.provider.model)
        try:
            answer = await self._run_agent(start, prompt, stream, progress)
        except ProviderFailure as failure:
            await self._fail(stream, start.usage_log_id, progress, str(failure))
            return None
        except BaseException:
            # Cancelled (socket gone) or a bug: the use goes back only if nothing was spent.
            progress.text = "".join(stream.streamed)
            await asyncio.shield(
                database_sync_to_async(services.ai_turn_abort)(
                    self.user, start.usage_log_id, progress
                )
            )
            raise
        if not stream.sent_text:
            await stream.text_chunk("(The assistant returned an empty answer.)")
        await stream.close()
        memory, uses_left = await database_sync_to_async(services.ai_turn_complete)(
            self.user, start.container.pk, start.usage_log_id, prompt, answer
        )
        await self.send({"event": "memory_data", "memory": memory})
        await self.connected(uses_left)
        if self.announce is not None:
            await self.announce(uses_left)
        return None

    async def _run_agent(
        self,
        start: services.TurnStart,
        prompt: str,
        stream: _AnswerStream,
        progress: AgentAnswer,
    ) -> AgentAnswer:
        container = start.container
        try:
            driver: NodeDriver | None = driver_for(container)
        except DomainError:
            driver = None  # no VM yet: the agent can still talk, its tools say why they fail
        tools = ToolContext(
            driver=driver, vm_id=container.vm_id, audit=self._audit_tool, container_pk=container.pk
        )
        client = await self._client_for(start.provider)
        try:
            agent = DevAgent(client, start.provider.model, tools)
            return await agent.run(start.history, prompt, stream, progress)
        except BaseException:
            await self.close()  # a failed or cancelled stream may leave its connection unusable
            raise

    async def _client_for(self, config: ProviderConfig) -> AsyncOpenAI:
        """The socket's provider client, kept between turns while the admin's settings stay
        the same (its connection then stays open: no TCP and TLS handshake before each turn's
        request); a changed setting gets a new client on the next turn."""
        if self._client is not None and self._client_config != config:
            await self.close()
        if self._client is None:
            self._client, self._client_config = get_openai_client(config), config
        return self._client

    async def close(self) -> None:
        """Close the provider client (the socket went away, or its connection is suspect)."""
        client, self._client, self._client_config = self._client, None, None
        if client is not None:
            await client.close()

    async def _fail(
        self, stream: _AnswerStream, usage_log_id: int, progress: AgentAnswer, message: str
    ) -> None:
        progress.text = "".join(stream.streamed)
        uses_left = await database_sync_to_async(services.ai_turn_abort)(
            self.user, usage_log_id, progress
        )
        if stream.open:
            await stream.text_chunk(f"\n\n{message}")
        else:
            await stream.text_chunk(message)
        await stream.close()
        await self.connected(uses_left)
        if progress.spent and self.announce is not None:
            await self.announce(uses_left)

    async def _audit_tool(
        self, name: str, metadata: dict[str, Any], success: bool, message: str
    ) -> None:
        await database_sync_to_async(audit_log_ws)(
            action=f"agent_tool.{name}",
            user=self.user,
            ip=self.ip,
            user_agent=self.user_agent,
            target_type="container",
            target_id=self.container_pk,
            message=message,
            metadata=metadata,
            success=success,
        )
