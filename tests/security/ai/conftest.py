"""The AI socket's fixtures (a local OpenAI-compatible provider, a running container)."""

from tests.ai.conftest import (  # noqa: F401
    ai_config,
    container_type,
    fake_provider,
    open_ai_socket,
    running_container,
    set_ai_uses,
)
