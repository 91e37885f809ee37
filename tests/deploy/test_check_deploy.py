"""``manage.py check --deploy`` with .env.example's production values reports nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.deploy import VENV_BIN, production_env
from tests.support.host import REPO


def check_deploy(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "python"), str(REPO / "manage.py"), "check", "--deploy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_with_the_production_env_example_reports_no_issue(tmp_path: Path) -> None:
    env = production_env(DJANGO_SETTINGS_MODULE="pequeroku.settings", DB_HOST="127.0.0.1")

    result = check_deploy(tmp_path, env, "--fail-level", "DEBUG")

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_flags_a_development_setup(tmp_path: Path) -> None:
    env = production_env(
        DJANGO_SETTINGS_MODULE="pequeroku.settings",
        DEBUG="true",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
    )

    result = check_deploy(tmp_path, env)

    assert "security.W018" in result.stderr  # DEBUG on
    assert "security.W008" in result.stderr  # no SSL redirect
