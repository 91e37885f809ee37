"""Receivers: guard, then delegate to a service.

- ``create_user_quota``: every new user gets a quota.
- ``stop_containers_of_deactivated_quota``: active True -> False stops all containers.
- ``sync_team_memberships``: a saved team keeps its owner's admin membership in line.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from vm_manager import services
from vm_manager.models import ResourceQuota, Team


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="vm_manager.create_user_quota")
def create_user_quota(
    sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    if created and not raw:
        services.quota_create_for_user(instance)


@receiver(post_save, sender=ResourceQuota, dispatch_uid="vm_manager.quota_deactivated")
def stop_containers_of_deactivated_quota(
    sender: Any, instance: ResourceQuota, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    was_active = getattr(instance, "_loaded_active", None)
    instance._loaded_active = instance.active
    if raw or created or instance.active or was_active is False:
        return
    services.quota_stop_all_containers(instance)


@receiver(post_save, sender=Team, dispatch_uid="vm_manager.sync_team_memberships")
def sync_team_memberships(sender: Any, instance: Team, raw: bool = False, **kwargs: Any) -> None:
    if not raw:
        services.team_sync_memberships(instance)
