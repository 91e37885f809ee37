"""Commands and whole-VM actions for the REST API: exec, statistics, restart.

Entry points: ``container_exec``, ``container_statistics``, ``container_restart``.
"""

from __future__ import annotations

from django.conf import settings

from vm_manager.drivers import ExecResult, VMStats
from vm_manager.models import Container

from .access import call, running_driver


def container_exec(container: Container, cmd: str) -> ExecResult:
    """Run ``cmd`` in ``/app``; time and output are bounded by the driver."""
    driver = running_driver(container)
    return call(driver.exec, container.vm_id, cmd, float(settings.EXEC_TIMEOUT_SECONDS))


def container_statistics(container: Container) -> VMStats:
    driver = running_driver(container)
    return call(driver.vm_stats, container.vm_id)


def container_restart(container: Container) -> None:
    """Reboot the VM in place; desired and observed state stay ``running``."""
    driver = running_driver(container)
    call(driver.vm_stop, container.vm_id)
    call(driver.vm_start, container.vm_id)
