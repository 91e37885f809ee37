"""Workspace path confinement for the agent.

A copy of ``vm_manager.guest.paths.workspace_path``: importing ``vm_manager`` pulls in Django,
which a compute host does not need. ``tests/contracts/test_paths_agree.py`` keeps the two equal.
Symlinks are resolved inside the guest (see ``node_agent.guest``).
"""

from __future__ import annotations

import posixpath

from .errors import PathNotAllowedError

WORKSPACE_ROOT = "/app"
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def workspace_path(path: str, root: str = WORKSPACE_ROOT) -> str:
    """Normalise ``path`` to an absolute path inside ``root`` or raise ``PathNotAllowedError``."""
    if not isinstance(path, str) or path == "" or "\x00" in path:
        raise PathNotAllowedError("path must be a non-empty string")
    joined = path if path.startswith("/") else posixpath.join(root, path)
    normal = posixpath.normpath(joined)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal != root and not normal.startswith(root.rstrip("/") + "/"):
        raise PathNotAllowedError(f"path {path!r} is outside {root}")
    encoded = normal.encode(errors="surrogatepass")
    if len(encoded) > MAX_PATH_BYTES or any(
        len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")
    ):
        raise PathNotAllowedError("path is too long")
    return normal
