"""Migrations on PostgreSQL: a fresh database migrates, seeds, and matches the models."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.support.deploy import PG_HOST, PG_PORT, PG_USER, VENV_BIN, base_env, pg_env
from tests.support.host import REPO

pytestmark = pytest.mark.integration


def _manage(database: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "python"), str(REPO / "manage.py"), *args],
        cwd=cwd,
        env=base_env(**pg_env(database), DJANGO_SETTINGS_MODULE="pequeroku.settings"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_fresh_postgresql_database_migrates_and_is_seeded(
    fresh_pg_database: str, tmp_path: Path
) -> None:
    migrate = _manage(fresh_pg_database, "migrate", "--no-input", cwd=tmp_path)
    again = _manage(fresh_pg_database, "migrate", "--no-input", cwd=tmp_path)
    pending = _manage(fresh_pg_database, "makemigrations", "--check", "--dry-run", cwd=tmp_path)

    assert migrate.returncode == 0, migrate.stderr
    assert "No migrations to apply." in again.stdout
    assert pending.returncode == 0, pending.stdout
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=fresh_pg_database) as c:
        types = c.execute(
            "SELECT container_type_name FROM vm_manager_containertype ORDER BY credits_cost"
        ).fetchall()
        configs = c.execute("SELECT count(*) FROM internal_config_config").fetchone()
    assert [t[0] for t in types] == ["small", "medium", "large"]
    assert configs is not None and configs[0] >= 7
