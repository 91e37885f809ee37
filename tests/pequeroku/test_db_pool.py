"""PostgreSQL connections are pooled per process (a stated bound), in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "db = settings.DATABASES['default']; "
    "print(json.dumps({'age': db['CONN_MAX_AGE'], 'pool': db.get('OPTIONS', {}).get('pool')}))"
)


def database_settings(**env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DEBUG"))}
    clean.update({"DJANGO_SETTINGS_MODULE": "pequeroku.settings", "DB_NAME": "probe", **env})
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_postgresql_connections_are_a_pool_of_at_most_ten_per_process_by_default() -> None:
    assert database_settings() == {
        "age": 0,  # the pool keeps the connections; Django refuses persistent ones with it
        "pool": {"min_size": 2, "max_size": 10, "timeout": 5},
    }


def test_pool_size_and_wait_come_from_the_environment() -> None:
    found = database_settings(DB_POOL_MAX_SIZE="4", DB_POOL_TIMEOUT="2")

    assert found["pool"] == {"min_size": 2, "max_size": 4, "timeout": 2}


def test_no_pool_falls_back_to_persistent_connections() -> None:
    assert database_settings(DB_POOL_MAX_SIZE="0", DB_CONN_MAX_AGE="30") == {
        "age": 30,
        "pool": None,
    }


def test_the_pool_package_is_installed() -> None:
    import psycopg_pool  # noqa: F401 - Django imports it when the first connection is made
