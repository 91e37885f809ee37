"""Searching the workspace: one fixed-string grep run in the guest, for the editor and the AI.

Entry points: ``search_command`` (the shell command), ``parse_search_output`` (its output as
hits), the bounds ``SEARCH_*`` and ``DEFAULT_EXCLUDED_DIRS``.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import TypedDict

SEARCH_MAX_RESULTS = 250  # matching lines over all files
SEARCH_MAX_PER_FILE = 50
SEARCH_TIMEOUT = 10.0  # seconds, enforced inside the guest; the node call allows a little more
SEARCH_MAX_LINE = 300  # characters kept of each matching line
SEARCH_MAX_PATTERN = 200
SEARCH_MAX_FILTERS = 32
DEFAULT_EXCLUDED_DIRS = (
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "__pycache__",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".cache",
    ".next",
    "dist",
    "build",
)
# What a search's exit code means (set by ``search_command``).
EXIT_NOT_A_DIRECTORY = 3
EXIT_OUTSIDE_WORKSPACE = 4


class SearchHit(TypedDict):
    path: str
    matchs: list[str]


def search_command(
    relative_root: str,
    pattern: str,
    *,
    case_sensitive: bool,
    include_globs: list[str],
    exclude_dirs: list[str],
) -> str:
    """A shell command run in the workspace root printing ``./path\\0line:text`` per match.

    Fixed-string matching (no regex backtracking to bound), ``-I`` skips binaries, ``-r`` does
    not follow symlinks below the root, the root itself is checked to stay in the workspace, and
    ``timeout`` plus ``head`` bound time and output.
    """
    grep = ["grep", "-rnIZF", "-m", str(SEARCH_MAX_PER_FILE)]
    if not case_sensitive:
        grep.append("-i")
    grep += [f"--exclude-dir={name}" for name in dict.fromkeys(exclude_dirs)]
    grep += [f"--include={glob}" for glob in include_globs]
    grep += ["-e", pattern, "--", "."]
    grep_line = " ".join(shlex.quote(part) for part in grep)
    target = shlex.quote(f"./{relative_root}" if relative_root else ".")
    return (
        'start="$(pwd -P)"; '
        f"cd -P -- {target} 2>/dev/null || exit {EXIT_NOT_A_DIRECTORY}; "
        f'case "$(pwd -P)/" in "$start"/*) ;; *) exit {EXIT_OUTSIDE_WORKSPACE} ;; esac; '
        f"timeout -s KILL {int(SEARCH_TIMEOUT)} {grep_line} 2>/dev/null "
        f"| cut -c1-{SEARCH_MAX_LINE + 200} | head -n {SEARCH_MAX_RESULTS}; exit 0"
    )


def parse_search_output(base: str, stdout: str) -> list[SearchHit]:
    hits: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition("\x00")
        number, colon, text = rest.partition(":")
        if not sep or not colon or not number.isdigit():
            continue  # a line cut by the output bound
        path = posixpath.normpath(posixpath.join(base, name))
        hits.setdefault(path, []).append(f"L{number}: {text[:SEARCH_MAX_LINE]}")
    return [SearchHit(path=path, matchs=matches) for path, matches in hits.items()]
