"""Deployment helpers: clean and production-shaped environments, PostgreSQL and Redis
coordinates, process groups, and waiting for a service to answer."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.host import REPO

# The interpreter running the tests, wherever its virtualenv lives (Poetry keeps it outside the
# checkout by default); its bin/ also holds the python the scripts under test find on PATH.
VENV_BIN = Path(sys.executable).parent
PG_HOST = os.environ.get("PEQUEROKU_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("PEQUEROKU_TEST_PG_PORT", "5432")
PG_USER = os.environ.get("PEQUEROKU_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("PEQUEROKU_TEST_REDIS", "redis://127.0.0.1:6379/15")

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".local", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
    "staticfiles", "media", "db.sqlite3*", ".env", "*.egg-info", "htmlcov", ".coverage",
)  # fmt: skip


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment: the project's venv first on PATH, nothing inherited from the
    developer's shell that could change the settings."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def production_env(**extra: str) -> dict[str, str]:
    """.env.example with a real secret, as an operator would fill it in."""
    env = base_env(**parse_env_file(REPO / ".env.example"))
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    env.update(extra)
    return env


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql)


def pg_env(database: str) -> dict[str, str]:
    return {
        "DB_NAME": database,
        "DB_USER": PG_USER,
        "DB_PASSWORD": "",
        "DB_HOST": PG_HOST,
        "DB_PORT": PG_PORT,
    }


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM the process group (the process was started in its own session), then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    describe: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}\n{describe()}")
        with contextlib.suppress(httpx.HTTPError, OSError):
            if predicate():
                return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s\n{describe()}")
