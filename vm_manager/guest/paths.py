"""The one normaliser of workspace paths: REST, the editor, the AI tools and the drivers.

Entry points: ``workspace_path``, ``relative_to_workspace``, ``MAX_PATH_BYTES``,
``MAX_NAME_BYTES``.

``node_agent.paths`` is a copy (the agent does not import Django);
``tests/contracts/test_paths_agree.py`` runs one table of cases through both.
"""

from __future__ import annotations

import posixpath

from vm_manager.drivers.base import WORKSPACE_ROOT, PathNotAllowed, PathTooLong

# Linux's limits: checked here so an over-long path is a clear "not allowed" everywhere rather
# than whatever the guest's filesystem answers.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


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
    encoded = normal.encode(errors="surrogatepass")
    if len(encoded) > MAX_PATH_BYTES or any(
        len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")
    ):
        raise PathTooLong("path is too long")
    return normal


def relative_to_workspace(path: str, root: str = WORKSPACE_ROOT) -> str:
    """``/app/a/b`` -> ``a/b``; the root itself -> ``""``."""
    normal = workspace_path(path, root)
    return "" if normal == root else normal[len(root.rstrip("/")) + 1 :]
