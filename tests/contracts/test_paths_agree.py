"""The agent's path rules (``node_agent/paths.py``) and the web's (``vm_manager.guest.paths``)
are one rule: the same table of paths gives the same path or the same refusal through both."""

from __future__ import annotations

import pytest

from node_agent.errors import PathNotAllowedError
from node_agent.paths import workspace_path as agent_workspace_path
from vm_manager.drivers import PathNotAllowed
from vm_manager.guest.paths import MAX_NAME_BYTES, MAX_PATH_BYTES
from vm_manager.guest.paths import workspace_path as web_workspace_path

LONG_NAME = "n" * MAX_NAME_BYTES
LONG_PATH = "/app/" + "/".join(["d" * 200] * (MAX_PATH_BYTES // 201))

CASES = {
    "/app": "/app",
    "/app/": "/app",
    "src/main.py": "/app/src/main.py",
    "./src//main.py": "/app/src/main.py",
    "/app/src/../README.md": "/app/README.md",
    "//app//x": "/app/x",
    "///app/x": "/app/x",
    "/app/.": "/app",
    "a b/ü.txt": "/app/a b/ü.txt",
    LONG_NAME: f"/app/{LONG_NAME}",
    "../etc/passwd": None,
    "/etc/passwd": None,
    "/app/../etc": None,
    "/application": None,
    "/app/x/../../etc": None,
    "..": None,
    "": None,
    "a\x00b": None,
    LONG_NAME + "n": None,  # one byte over a name
    "é" * 128: None,  # 256 bytes in UTF-8
    LONG_PATH + "/" + "x" * 200: None,  # over the whole-path limit
}


def outcome(func, given: str) -> str | None:
    try:
        return func(given)
    except (PathNotAllowed, PathNotAllowedError):
        return None


@pytest.mark.parametrize(("given", "expected"), CASES.items(), ids=lambda v: repr(v)[:40])
def test_agent_and_web_normalise_or_refuse_a_path_alike(given, expected):
    assert outcome(web_workspace_path, given) == expected
    assert outcome(agent_workspace_path, given) == expected


def test_the_case_table_covers_the_length_limits_from_both_sides():
    assert len(f"/app/{LONG_NAME}".encode()) < MAX_PATH_BYTES
    assert len((LONG_PATH + "/" + "x" * 200).encode()) > MAX_PATH_BYTES
    assert len(LONG_PATH.encode()) <= MAX_PATH_BYTES
