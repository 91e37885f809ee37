"""Who may keep a socket on a container open: the check at connect and the re-check after.

Entry points: ``container_for_socket(user, pk)`` (the connect rule, raising
``SocketAccessDenied`` with the contract's close code), ``SocketGrant`` (what a socket was
granted, ``grant.still_valid()``), ``access_version(user_pk, container_pk)`` and
``access_changed(user_pks=..., container_pks=...)`` (a change that may take access away).

A grant stays valid while the user is active, the session the socket opened with still exists
with the same password hash (logout and a password change end it), and the container is still
live and in ``visible_containers_for(user)``. ``access_changed`` bumps a version counter in the
cache (shared by every worker with Redis) that every socket compares on each frame, and asks
each affected socket, through the channel layer, to re-check now and close with 4403.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.core.cache import cache

from vm_manager.errors import ContainerMissing, ContainerNotVisible
from vm_manager.models import Container
from vm_manager.selectors import live_visible_container

logger = logging.getLogger(__name__)

CLOSE_NOT_LOGGED_IN = 4401
CLOSE_NOT_ALLOWED = 4403
CLOSE_NOT_FOUND = 4404
REVOKE_MESSAGE = "socket.revoke"
# Cached versions outlive any socket; a missing key reads as 0, so expiry only forces a re-check.
VERSION_TTL_SECONDS = 7 * 24 * 3600


class SocketAccessDenied(Exception):
    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


def container_for_socket(user: Any, pk: int) -> Container:
    """The container ``user`` may open, or ``SocketAccessDenied`` with the contract's code."""
    if not getattr(user, "is_authenticated", False):
        raise SocketAccessDenied(CLOSE_NOT_LOGGED_IN, "not logged in")
    try:
        return live_visible_container(user, pk)
    except ContainerNotVisible as exc:
        raise SocketAccessDenied(exc.close_code, "not allowed") from None
    except ContainerMissing as exc:
        raise SocketAccessDenied(exc.close_code, "no such container") from None


def user_group(user_pk: int) -> str:
    """Every IDE and AI socket of one user, on any worker."""
    return f"ide-user-{user_pk}"


def container_group(container_pk: int) -> str:
    """Every IDE and AI socket on one container, on any worker."""
    return f"ide-container-{container_pk}"


def _user_key(user_pk: int) -> str:
    return f"ide-access:u:{user_pk}"


def _container_key(container_pk: int) -> str:
    return f"ide-access:c:{container_pk}"


def access_version(user_pk: int, container_pk: int) -> tuple[int, int]:
    """One cache read: changes whenever ``access_changed`` names the user or the container."""
    found = cache.get_many([_user_key(user_pk), _container_key(container_pk)])
    return found.get(_user_key(user_pk), 0), found.get(_container_key(container_pk), 0)


def _bump(key: str) -> None:
    try:
        cache.incr(key)
    except ValueError:  # absent: start it (a lost race only bumps once instead of twice)
        cache.set(key, 1, VERSION_TTL_SECONDS)


def access_changed(
    *,
    user_pks: Iterable[int] = (),
    container_pks: Iterable[int] = (),
    reason: str = "",
    session_key: str | None = None,
) -> None:
    """Sockets of these users and on these containers re-check their access now.

    Call it after the change is committed (``transaction.on_commit``), so the re-check sees it.
    ``session_key``: that session has ended (logout), its sockets close without a re-check.
    """
    groups: list[str] = []
    for user_pk in set(user_pks):
        _bump(_user_key(user_pk))
        groups.append(user_group(user_pk))
    for container_pk in set(container_pks):
        _bump(_container_key(container_pk))
        groups.append(container_group(container_pk))
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(
                group, {"type": REVOKE_MESSAGE, "reason": reason, "session_key": session_key}
            )
        except Exception:
            # The version bump already stops every frame; the close waits for the next check.
            logger.warning("could not tell group %s to re-check access", group, exc_info=True)


@dataclass(frozen=True)
class SocketGrant:
    """What a socket was allowed at connect, to be re-checked later."""

    user_pk: int
    container_pk: int
    session_key: str | None
    auth_hash: str

    @classmethod
    def for_connect(cls, user: Any, container: Container, session: Any) -> SocketGrant:
        key = getattr(session, "session_key", None)
        return cls(user.pk, container.pk, key, user.get_session_auth_hash())

    def still_valid(self) -> bool:
        """One user read, one session read, the visibility query (sync: run off the loop)."""
        user = get_user_model().objects.filter(pk=self.user_pk).first()
        if user is None or not user.is_active:
            return False
        if user.get_session_auth_hash() != self.auth_hash:
            return False
        if self.session_key is not None and not _session_alive(self.session_key, self.user_pk):
            return False
        try:
            live_visible_container(user, self.container_pk)
        except (ContainerNotVisible, ContainerMissing):
            return False
        return True


def _session_alive(session_key: str, user_pk: int) -> bool:
    from importlib import import_module

    from django.conf import settings

    store: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()
    # ``load`` of a deleted session (logout flushes it) returns an empty dict.
    return str(data.get("_auth_user_id")) == str(user_pk)
