"""Agents of the AI assistant: ``DevAgent`` and the tools it runs in the user's container."""

from ai_services.agents.dev_agent import (
    AgentAnswer,
    ChatMessage,
    DevAgent,
    ProviderFailure,
    TurnListener,
)
from ai_services.agents.tools import TOOL_SCHEMAS, ToolContext, tool_run

__all__ = [
    "TOOL_SCHEMAS",
    "AgentAnswer",
    "ChatMessage",
    "DevAgent",
    "ProviderFailure",
    "ToolContext",
    "TurnListener",
    "tool_run",
]
