"""Fixtures for the IDE sockets, defined in ``tests.support.fixtures.sockets`` (security/sockets
shares them): committed seed rows, session cookies (``alice_cookie``/``bob_cookie``), alice's
running container on ``node1`` with its in-memory VM, and ``open_socket(path, cookie)``.
Read helpers (``next_event``, ``stream_until``, ``event_where``) are in ``tests.support.sockets``.
"""

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
