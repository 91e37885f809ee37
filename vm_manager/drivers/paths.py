"""Workspace path confinement shared by every driver and by the node agent."""

from __future__ import annotations

import posixpath

from .base import WORKSPACE_ROOT, PathNotAllowed


def workspace_path(path: str, root: str = WORKSPACE_ROOT) -> str:
    """Normalise ``path`` to an absolute path inside ``root`` or raise ``PathNotAllowed``.

    Relative paths are taken from ``root``. ``..`` that would climb above ``root`` and
    absolute paths elsewhere are refused rather than clamped, so a mistake is visible.
    Symlinks are the caller's job: only the filesystem that holds them can resolve them.
    """
    if not isinstance(path, str) or path == "" or "\x00" in path:
        raise PathNotAllowed("path must be a non-empty string")
    joined = path if path.startswith("/") else posixpath.join(root, path)
    normal = posixpath.normpath(joined)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal != root and not normal.startswith(root.rstrip("/") + "/"):
        raise PathNotAllowed(f"path {path!r} is outside {root}")
    return normal


def relative_to_workspace(path: str, root: str = WORKSPACE_ROOT) -> str:
    """``/app/a/b`` -> ``a/b``; the root itself -> ``""``."""
    normal = workspace_path(path, root)
    return "" if normal == root else normal[len(root.rstrip("/")) + 1 :]
