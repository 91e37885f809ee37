"""Reconcile requests: what a state change asks of the reconciler once it has committed.

``reconcile_requested`` is sent with ``container_ids`` for every request (tests and admin
listen to it); with ``settings.RECONCILE_IN_BACKGROUND`` a thread also runs the targeted
reconcile right away. Cron's ``manage.py reconcile`` converges anyway, so a lost request
only delays a change, never loses it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from django.conf import settings
from django.db import connections
from django.dispatch import Signal

from vm_manager.reconciler import reconcile_once

logger = logging.getLogger(__name__)

reconcile_requested = Signal()


def dispatch_reconcile(container_ids: Iterable[int]) -> None:
    ids = sorted(set(container_ids))
    if not ids:
        return
    reconcile_requested.send(sender=None, container_ids=ids)
    if settings.RECONCILE_IN_BACKGROUND:
        threading.Thread(
            target=_run_targeted_reconcile, args=(ids,), name="reconcile-request", daemon=True
        ).start()


def _run_targeted_reconcile(container_ids: list[int]) -> None:
    try:
        report = reconcile_once(container_ids)
        logger.info("targeted reconcile of %s: %s", container_ids, report.summary())
    except Exception:
        logger.exception("targeted reconcile of %s failed", container_ids)
    finally:
        # This thread's connections would otherwise stay open until the process exits.
        connections.close_all()
