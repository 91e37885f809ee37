"""Receivers: a change that may take access away makes the affected sockets re-check it.

- a team membership saved or deleted, a team saved or deleted: every member of the team
  (the removed user loses their teammates' containers, the teammates lose theirs);
- a user saved (deactivated, password changed, superuser flag dropped; a login's
  ``last_login`` write is skipped): that user;
- a user logged out: that user, and the session named so its sockets close at once;
- a container deleted or marked for deletion, or given to another owner: that container.

Each waits for the commit (the re-check must see the change) and calls
``access.access_changed``. Connected in ``vm_manager.apps.VmManagerConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from vm_manager.models import Container, Team, TeamMembership

from .access import access_changed


def _team_members(team_id: int) -> list[int]:
    return list(TeamMembership.objects.filter(team_id=team_id).values_list("user_id", flat=True))


def _after_commit(**changed: Any) -> None:
    transaction.on_commit(lambda: access_changed(**changed))


@receiver(post_save, sender=TeamMembership, dispatch_uid="vm_manager.ide.membership_saved")
@receiver(post_delete, sender=TeamMembership, dispatch_uid="vm_manager.ide.membership_deleted")
def membership_changed(sender: Any, instance: TeamMembership, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    team_id, user_id = instance.team_id, instance.user_id

    def notify() -> None:
        access_changed(user_pks=[user_id, *_team_members(team_id)], reason="team membership")

    transaction.on_commit(notify)


@receiver(post_save, sender=Team, dispatch_uid="vm_manager.ide.team_saved")
@receiver(post_delete, sender=Team, dispatch_uid="vm_manager.ide.team_deleted")
def team_changed(sender: Any, instance: Team, **kwargs: Any) -> None:
    if kwargs.get("raw") or kwargs.get("created"):
        return
    # Read the members now: after a delete the memberships are gone by the commit.
    members = [instance.owner_id, *_team_members(instance.pk)]
    _after_commit(user_pks=members, reason="team")


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="vm_manager.ide.user_saved")
def user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("raw") or kwargs.get("created"):
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    _after_commit(user_pks=[instance.pk], reason="user")


@receiver(user_logged_out, dispatch_uid="vm_manager.ide.user_logged_out")
def user_logged_out_everywhere(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    _after_commit(user_pks=[user.pk], reason="logout", session_key=session_key)


@receiver(post_save, sender=Container, dispatch_uid="vm_manager.ide.container_saved")
@receiver(post_delete, sender=Container, dispatch_uid="vm_manager.ide.container_deleted")
def container_changed(sender: Any, instance: Container, **kwargs: Any) -> None:
    if kwargs.get("raw") or kwargs.get("created"):
        return
    update_fields = kwargs.get("update_fields")
    deleted = kwargs.get("signal") is post_delete or instance.deleted_at is not None
    owner_may_change = update_fields is None or "user" in update_fields
    if deleted or owner_may_change:
        _after_commit(container_pks=[instance.pk], reason="container")
