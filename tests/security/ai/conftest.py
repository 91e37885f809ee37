"""The AI socket's fixtures (a local OpenAI-compatible provider, a running container)."""

from tests.support.fixtures.ai import (
    ai_config,
    container_type,
    fake_provider,
    open_ai_socket,
    running_container,
    set_ai_uses,
)

# Fixtures defined in tests.support, registered here by name.
__all__ = [
    "ai_config",
    "container_type",
    "fake_provider",
    "open_ai_socket",
    "running_container",
    "set_ai_uses",
]
