"""The IDE sockets' fixtures (committed rows, session cookies, communicators), shared here."""

from tests.support.fixtures.sockets import (
    _fresh_revisions,
    alice_cookie,
    bob_cookie,
    container_type,
    open_socket,
    running_container,
    seeded,
    workspace,
)

# Fixtures defined in tests.support, registered here by name.
__all__ = [
    "_fresh_revisions",
    "alice_cookie",
    "bob_cookie",
    "container_type",
    "open_socket",
    "running_container",
    "seeded",
    "workspace",
]
