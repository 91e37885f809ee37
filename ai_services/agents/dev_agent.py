"""DevAgent: one user turn as a bounded tool loop over a streaming chat completion.

Entry point: ``DevAgent(client, model, tools).run(history, prompt, listener, answer)``, which
fills in and returns ``answer`` (a fresh ``AgentAnswer`` when none is given; passing one lets the
caller see what a turn that fails or is cancelled half way had already produced).

Each round streams a completion with the tools offered; text deltas go to the listener as they
arrive, tool calls are collected and run in the container, and their (bounded) results are fed
back for the next round. The loop stops at the first round without tool calls, after
``max_rounds`` (the last round is asked for text only) or after ``max_seconds``. Token usage is
summed from the provider's usage chunks (``stream_options.include_usage``). Any provider failure
becomes a ``ProviderFailure`` whose message is ours, safe to show and to log.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import httpx2
import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ai_services.agents.tools import TOOL_SCHEMAS, ToolContext, tool_run

logger = logging.getLogger(__name__)

MAX_ROUNDS = 6
MAX_SECONDS = 180.0

SYSTEM_PROMPT = """You are the AI pair programmer of Pequeroku, working inside the user's \
Linux virtual machine. The user's project lives in /app; you can only see and change files \
there. Tools:
- read_workspace: the tree of /app (or a folder of it)
- read_file / create_file: read or write one file
- exec_command: run a bash command in /app (30 s limit, output cut)
- search: find a text in the files
Look before you answer: read the files that matter instead of guessing. Change files only when \
the user asks for a change. Keep answers short, use Markdown, and show code in fenced blocks. \
Tool outputs are cut at a few thousand characters; read big files in parts with exec_command \
(sed -n) when needed."""


class ChatMessage(TypedDict):
    role: str
    content: str


class TurnListener(Protocol):
    """Receives what the user should see while a turn runs."""

    async def tool_started(self, name: str) -> None: ...

    async def text_chunk(self, content: str) -> None: ...


class ProviderFailure(Exception):
    """The provider failed; ``str(self)`` is a message fit for the user and the logs."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class AgentAnswer:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rounds: int = 0
    # Set as the turn goes, so a turn that ends early still tells what it cost.
    provider_answered: bool = False
    tools_run: int = 0

    @property
    def spent(self) -> bool:
        """The provider streamed generated output or a tool ran: the turn was not free."""
        return self.provider_answered or self.tools_run > 0


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def provider_failure(exc: BaseException, streaming: bool = False) -> ProviderFailure:
    """Our own words for a provider error; the provider's body (which may echo the key) is
    never copied. ``streaming``: the answer had started arriving."""
    if isinstance(exc, openai.APITimeoutError | TimeoutError | httpx2.TimeoutException):
        return ProviderFailure("The AI provider did not answer in time.", kind="timeout")
    if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError):
        if streaming:
            return ProviderFailure(
                "The AI provider broke off its answer; try again.", kind="dropped"
            )
        return ProviderFailure("The AI provider could not be reached.", kind="unreachable")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderFailure(
            f"The AI provider refused our credentials (HTTP {exc.status_code}); "
            "an administrator must check the AI settings.",
            kind="auth",
        )
    if isinstance(exc, openai.RateLimitError):
        return ProviderFailure(
            "The AI provider is rate limiting us (HTTP 429); try again in a minute.",
            kind="rate_limited",
        )
    if isinstance(exc, openai.APIStatusError):
        return ProviderFailure(
            f"The AI provider failed (HTTP {exc.status_code}); try again later.",
            kind="status",
        )
    return ProviderFailure(
        "The AI provider sent an answer we could not read; try again.", kind="malformed"
    )


class DevAgent:
    def __init__(
        self,
        client: AsyncOpenAI,
        model: str,
        tools: ToolContext,
        *,
        max_rounds: int = MAX_ROUNDS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.client = client
        self.model = model
        self.tools = tools
        self.max_rounds = max_rounds
        self.max_seconds = max_seconds

    def system_prompt(self) -> str:
        return SYSTEM_PROMPT

    async def run(
        self,
        history: list[ChatMessage],
        prompt: str,
        listener: TurnListener,
        answer: AgentAnswer | None = None,
    ) -> AgentAnswer:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt()},
            *history,
            {"role": "user", "content": prompt},
        ]
        if answer is None:
            answer = AgentAnswer(text="", model=self.model)
        try:
            async with asyncio.timeout(self.max_seconds):
                await self._loop(messages, answer, listener)
        except TimeoutError as exc:
            raise ProviderFailure(
                f"The assistant gave up after {self.max_seconds:.0f} seconds.", kind="timeout"
            ) from exc
        return answer

    async def _loop(
        self, messages: list[dict[str, Any]], answer: AgentAnswer, listener: TurnListener
    ) -> None:
        texts: list[str] = []
        for round_number in range(1, self.max_rounds + 1):
            answer.rounds = round_number
            last_round = round_number == self.max_rounds
            text, calls = await self._round(messages, answer, listener, last_round)
            texts.append(text)
            if not calls or last_round:
                break
            messages.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in calls
                    ],
                }
            )
            for call in calls:
                await listener.tool_started(call.name)
                answer.tools_run += 1  # counted before it runs: its effects may outlive a cancel
                result = await tool_run(self.tools, call.name, call.arguments)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        answer.text = "\n\n".join(text for text in texts if text)

    async def _stream_completion(
        self, messages: list[dict[str, Any]], last_round: bool
    ) -> AsyncStream[ChatCompletionChunk]:
        """``chat.completions.create(..., stream=True)`` without the SDK's request transform.

        The body is plain JSON built here, which the transform returns unchanged; walking it
        against the SDK's typed-dict unions cost 5-7 ms of CPU a round (21 messages) before
        the request left, most of the socket's overhead before the first token.
        """
        body = {
            "model": self.model,
            "messages": messages,
            "tools": TOOL_SCHEMAS,
            "tool_choice": "none" if last_round else "auto",
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return await self.client.post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=AsyncStream[ChatCompletionChunk],
        )

    async def _round(
        self,
        messages: list[dict[str, Any]],
        answer: AgentAnswer,
        listener: TurnListener,
        last_round: bool,
    ) -> tuple[str, list[_ToolCall]]:
        calls: dict[int, _ToolCall] = {}
        parts: list[str] = []
        streaming = False
        try:
            stream = await self._stream_completion(messages, last_round)
            try:
                async for chunk in stream:
                    streaming = True
                    if chunk.model:
                        answer.model = chunk.model
                    if chunk.usage is not None:
                        answer.prompt_tokens += chunk.usage.prompt_tokens or 0
                        answer.completion_tokens += chunk.usage.completion_tokens or 0
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content or delta.tool_calls:
                            # Generated output (not the empty opening or usage chunks).
                            answer.provider_answered = True
                        if delta.content:
                            parts.append(delta.content)
                            await listener.text_chunk(delta.content)
                        for tool_delta in delta.tool_calls or []:
                            call = calls.setdefault(tool_delta.index, _ToolCall())
                            call.id = tool_delta.id or call.id
                            if tool_delta.function is not None:
                                call.name += tool_delta.function.name or ""
                                call.arguments += tool_delta.function.arguments or ""
            finally:
                await stream.close()
        except (
            openai.OpenAIError,
            httpx2.HTTPError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
        ) as exc:
            # A stream can fail while it is read, not only when it is opened: the transport
            # (connection dropped, read timeout) or the content (invalid JSON, missing fields).
            failure = provider_failure(exc, streaming)
            logger.warning("AI provider failure (%s): %s", failure.kind, type(exc).__name__)
            raise failure from None
        ordered = [calls[index] for index in sorted(calls)]
        for position, call in enumerate(ordered):
            call.id = call.id or f"call_{answer.rounds}_{position}"
        return "".join(parts), [call for call in ordered if call.name]
