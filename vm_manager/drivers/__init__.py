"""Node drivers: how the web service reaches the VMs on a node.

``get_node_driver(node)`` returns the driver class named by ``settings.NODE_DRIVER``
(the node agent's HTTP API in production, the in-memory fake in tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

from .base import (
    WORKSPACE_ROOT,
    ExecResult,
    FileEntry,
    GuestFileNotFound,
    NodeAuthError,
    NodeBadRequest,
    NodeDriver,
    NodeError,
    NodeHealth,
    NodeUnavailable,
    PathNotAllowed,
    TerminalSession,
    VMNotFound,
    VMNotRunning,
    VMSpec,
    VMStats,
    VMStatus,
)

if TYPE_CHECKING:
    from vm_manager.models import Node

__all__ = [
    "WORKSPACE_ROOT",
    "ExecResult",
    "FileEntry",
    "GuestFileNotFound",
    "NodeAuthError",
    "NodeBadRequest",
    "NodeDriver",
    "NodeError",
    "NodeHealth",
    "NodeUnavailable",
    "PathNotAllowed",
    "TerminalSession",
    "VMNotFound",
    "VMNotRunning",
    "VMSpec",
    "VMStats",
    "VMStatus",
    "get_node_driver",
]


def get_node_driver(node: Node) -> NodeDriver:
    driver_class = import_string(settings.NODE_DRIVER)
    return driver_class.for_node(node)
