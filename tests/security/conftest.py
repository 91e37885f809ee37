"""Security regression tests: one per attack from the review of 6faf012, named after it.

Each test performs the attack and asserts it no longer works; each failed on 6faf012.
"""

from __future__ import annotations

# The API's fixtures (a running container on the in-memory node, teams), shared here.
from tests.support.fixtures.api import client_for, running_container, team, teammate

# Fixtures defined in tests.support, registered here by name.
__all__ = ["client_for", "running_container", "team", "teammate"]
