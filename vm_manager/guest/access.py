"""Reaching a container's VM: the driver of its node, only while it can answer.

Entry points: ``driver_for(container)``, ``ensure_running(container)``,
``ensure_in_use(container)`` (a use: resumes an idle-suspended container first),
``running_driver(container)``, ``call(func, ...)`` (a driver coroutine from sync code, node
errors turned into domain errors).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from asgiref.sync import async_to_sync

from vm_manager.drivers import NodeDriver, get_node_driver
from vm_manager.errors import ContainerNotRunning, node_errors_as_domain_errors
from vm_manager.idle import container_touch, container_wake
from vm_manager.models import Container

T = TypeVar("T")


def driver_for(container: Container) -> NodeDriver:
    """The node driver of a container that is placed and not deleted."""
    if container.node_id is None or container.deleted_at is not None:
        raise ContainerNotRunning("The container has no VM yet.")
    return get_node_driver(container.node)  # type: ignore[arg-type]


def ensure_running(container: Container) -> None:
    """VM actions need a container meant to run that the reconciler saw running."""
    if container.desired_state != Container.DesiredState.RUNNING or (
        container.status != Container.Status.RUNNING
    ):
        raise ContainerNotRunning()


def ensure_in_use(container: Container) -> None:
    """A VM action is a use: record it, resume an idle-suspended container first (waiting
    for it), then require it running like ``ensure_running``."""
    if container.idle_suspended:
        fresh = container_wake(container)
        container.status, container.desired_state = fresh.status, fresh.desired_state
    else:
        container_touch(container)
    ensure_running(container)


def running_driver(container: Container) -> NodeDriver:
    ensure_in_use(container)
    return driver_for(container)


def call(func: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    with node_errors_as_domain_errors():
        return async_to_sync(func)(*args, **kwargs)
