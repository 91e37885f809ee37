"""Config rows inserted on ``post_migrate`` when missing (never overwriting an edit)."""

from __future__ import annotations

from typing import NamedTuple


class ConfigDefault(NamedTuple):
    name: str
    value: str
    description: str


CONFIG_DEFAULTS: tuple[ConfigDefault, ...] = (
    ConfigDefault("token_input_price", "1.5e-7", "Price per prompt (input) token"),
    ConfigDefault("token_output_price", "7.5e-7", "Price per completion (output) token"),
    ConfigDefault("default_ai_use_per_day", "5", "Daily AI uses for new users"),
    ConfigDefault("default_credits", "3", "Credits for new users"),
    ConfigDefault(
        "max_containers_per_user",
        "10",
        "Containers one user may own, stopped ones included; 0 means no cap",
    ),
    ConfigDefault(
        "idle_suspend_minutes",
        "30",
        "Suspend a container after this many minutes without an API call or open socket; 0 = never",
    ),
    ConfigDefault("openai_model", "openai/gpt-oss-120b", "Default LLM model"),
    ConfigDefault("openai_api_url", "https://api.groq.com/openai/v1", "OpenAI-compatible API URL"),
    ConfigDefault("openai_api_key", "change-me", "API key of the AI provider (secret)"),
)

SECRET_CONFIG_NAMES = frozenset({"openai_api_key"})
# Rows whose value says where a secret is sent: changing one needs that secret entered again.
SECRET_DESTINATIONS = {"openai_api_url": "openai_api_key"}
