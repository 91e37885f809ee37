"""The OpenAI-compatible client, built from ``internal_config.Config`` on every call.

Entry points: ``provider_config()``, ``get_openai_client(config=None)``.

The settings are read for every turn, so an admin edit of ``openai_api_key``, ``openai_api_url``
or ``openai_model`` applies to the next turn on every worker without a restart (a socket keeps
its client only while they are unchanged: ``ai_services.session``). The key lives only
in the client's headers: ``ProviderConfig`` keeps it out of ``repr`` and every message shown to a
user or written to a log is built by us, never copied from the provider's error body.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field

import certifi
import httpx2
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from internal_config.models import Config

DEFAULT_API_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"
# Seconds: the provider must start answering within READ_TIMEOUT (between two stream chunks
# too); the whole turn is bounded separately by the agent.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    model: str
    api_key: str = field(repr=False)


def provider_config() -> ProviderConfig:
    """The provider settings as the admin left them, in one query."""
    values = Config.get_config_values(["openai_api_key", "openai_api_url", "openai_model"])
    return ProviderConfig(
        base_url=(values["openai_api_url"] or DEFAULT_API_URL).strip(),
        model=(values["openai_model"] or DEFAULT_MODEL).strip(),
        api_key=(values["openai_api_key"] or "").strip(),
    )


def get_openai_client(config: ProviderConfig | None = None) -> AsyncOpenAI:
    """An async client for ``config`` (read from Config when not given); close it after use.

    No retries: a failed turn is reported to the user at once and spends no use, which is
    better than a silent wait of several back-offs.
    """
    config = config or provider_config()
    timeout = httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    return AsyncOpenAI(
        api_key=config.api_key or "missing",
        base_url=config.base_url,
        max_retries=0,
        timeout=timeout,
        http_client=DefaultAsyncHttpxClient(verify=_tls_context(), timeout=timeout),
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~25 ms; the context is immutable, so one per process is
    # shared by every turn's client (the clients themselves are per turn and closed after).
    return ssl.create_default_context(cafile=certifi.where())
