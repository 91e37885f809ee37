"""Fixtures for deployment tests: a copy of the project to run scripts in and fresh PostgreSQL
databases (environments, ports and process helpers are in ``tests.support.deploy``)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy import COPY_IGNORE, PG_HOST, PG_PORT, pg_admin
from tests.support.host import REPO


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The working tree copied to a temporary directory, so collectstatic, SQLite files and
    .env never touch the checkout."""
    target = tmp_path / "app"
    shutil.copytree(REPO, target, ignore=COPY_IGNORE, symlinks=True)
    return target


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"pequeroku_deploy_{secrets.token_hex(4)}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_HOST}:{PG_PORT} does not answer: {exc}")
    yield name
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
