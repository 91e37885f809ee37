"""Allowed observed-status transitions of a container, in one table."""

from __future__ import annotations

from vm_manager.models import Container

S = Container.Status

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.CREATED: frozenset({S.PROVISIONING, S.STOPPED, S.ERROR}),
    S.PROVISIONING: frozenset({S.RUNNING, S.STOPPED, S.ERROR}),
    S.RUNNING: frozenset({S.STOPPED, S.ERROR, S.PROVISIONING}),
    S.STOPPED: frozenset({S.PROVISIONING, S.RUNNING, S.ERROR}),
    S.ERROR: frozenset({S.PROVISIONING, S.RUNNING, S.STOPPED, S.ERROR}),
}


def can_transition(current: str, new: str) -> bool:
    return current == new or new in ALLOWED_TRANSITIONS.get(current, frozenset())
