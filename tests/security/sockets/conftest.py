"""The IDE sockets' fixtures (committed rows, session cookies, communicators), shared here."""

from tests.sockets.conftest import (  # noqa: F401
    _fresh_revisions,
    alice_cookie,
    bob_cookie,
    container_type,
    open_socket,
    running_container,
    seeded,
    workspace,
)
