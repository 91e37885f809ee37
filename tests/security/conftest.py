"""Security regression tests: one per attack from the review of 6faf012, named after it.

Each test performs the attack and asserts it no longer works; each failed on 6faf012.
"""

from __future__ import annotations

import base64

# The API's fixtures (a running container on the in-memory node, teams), shared here.
from tests.api.conftest import client_for, running_container, team, teammate  # noqa: F401


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
