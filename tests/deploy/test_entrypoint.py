"""entrypoint.sh itself: against the machine's PostgreSQL and Redis it migrates, collects
static files, creates the superuser and serves through Gunicorn; without a database it stops
with one clear line."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.deploy import REDIS_URL, pg_env, production_env, stop_group, wait_for
from tests.support.host import free_port

HTTPS = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy of .env.example sends


def run_entrypoint(
    project_copy: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project_copy / "entrypoint.sh"), *args],
        cwd=project_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.integration
def test_entrypoint_serves_readyz_and_admin_css_on_postgresql_and_redis(
    project_copy: Path, fresh_pg_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = production_env(
        **pg_env(fresh_pg_database),
        REDIS_URL=REDIS_URL,
        ALLOWED_HOSTS="127.0.0.1",
        CSRF_TRUSTED_ORIGINS="https://127.0.0.1",
        BIND=f"127.0.0.1:{port}",
        WORKERS="2",
        DB_WAIT_SECONDS="20",
    )
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "entrypoint.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(project_copy / "entrypoint.sh")],
            cwd=project_copy,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200,
            timeout=180,
            proc=proc,
            describe=lambda: _tail(log),
        )
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        login = httpx.get(f"{base}/admin/login/", headers=HTTPS, timeout=10)
        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+\.css)"', login.text)
        css = httpx.get(f"{base}{stylesheets[0]}", headers=HTTPS, timeout=10)
    finally:
        status = stop_group(proc)

    assert ready["checks"] == {"database": "ok", "channel_layer": "ok"}
    assert login.status_code == 200
    assert stylesheets[0].startswith("/static/admin/css/")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert len(css.content) > 100
    output = log.read_text()
    assert "entrypoint: superuser 'admin' created" in output
    assert "Traceback" not in output
    assert status == 0, _tail(log)


def test_entrypoint_exits_non_zero_with_one_clear_line_when_the_database_never_answers(
    project_copy: Path,
) -> None:
    closed_port = str(free_port())
    env = production_env(
        **{**pg_env("pequeroku"), "DB_PORT": closed_port},
        DB_WAIT_SECONDS="2",
        DB_WAIT_INTERVAL="0.5",
        REDIS_URL=REDIS_URL,
    )

    result = run_entrypoint(project_copy, env)

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("entrypoint: postgresql database 'pequeroku' at 127.0.0.1:")
    assert f":{closed_port} did not answer after " in line
    assert "check DB_HOST, DB_PORT" in line
    assert "migrate" not in result.stdout


def test_entrypoint_reports_a_configuration_error_in_one_line(project_copy: Path) -> None:
    env = production_env(REDIS_URL=REDIS_URL, SECRET_KEY="thisisnotasecretkey")

    result = run_entrypoint(project_copy, env)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "entrypoint: configuration error: DEBUG=false needs a real SECRET_KEY "
        "(the default is public)."
    ]


def test_entrypoint_loads_dotenv_without_overriding_the_environment(project_copy: Path) -> None:
    (project_copy / ".env").write_text(
        "# comment\nexport FROM_DOTENV='dotenv value'\nKEPT=from-dotenv\n"
    )
    env = production_env(REDIS_URL=REDIS_URL, KEPT="from-environment", DB_NAME="")

    result = run_entrypoint(project_copy, env, "bash", "-c", 'echo "$FROM_DOTENV|$KEPT"')

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "dotenv value|from-environment"


def test_gunicorn_starts_without_the_superuser_password_or_node_token(
    project_copy: Path, tmp_path: Path
) -> None:
    # A stand-in for python: every start-up step succeeds; "-m gunicorn" records its environment.
    seen = tmp_path / "gunicorn.env"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nif [ "$1 $2" = "-m gunicorn" ]; then env > {seen}; fi\nexit 0\n')
    fake.chmod(0o755)
    env = production_env(
        PYTHON=str(fake),
        DJANGO_SUPERUSER_PASSWORD="admin-password-in-env",
        NODE_AGENT_TOKEN="node-token-in-env-123456",
    )

    result = run_entrypoint(project_copy, env)

    assert result.returncode == 0, result.stderr
    environment = seen.read_text()
    assert "SECRET_KEY=" in environment  # what the workers need stays
    assert "admin-password-in-env" not in environment
    assert "node-token-in-env-123456" not in environment
