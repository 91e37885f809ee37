"""Fixtures for the reconciler: a run helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vm_manager.reconciler import ReconcileReport, reconcile_once


@pytest.fixture
def reconcile() -> Callable[..., ReconcileReport]:
    def run(*ids: int, **kwargs: Any) -> ReconcileReport:
        return reconcile_once(list(ids) if ids else None, **kwargs)

    return run
