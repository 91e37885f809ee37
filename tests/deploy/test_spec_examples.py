"""The spec's own examples work as written: ``docker run ... -e DEBUG=false`` serves plain
HTTP, and production start-up says loudly when it would run on SQLite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.support.deploy import VENV_BIN, base_env, stop_group, wait_for
from tests.support.host import free_port

# The environment of the spec's "Run (example)": docker run -p 8000:8000 -e ... (its database
# and Redis hosts are compose service names; nothing here needs them to answer).
SPEC_DOCKER_RUN = {
    "SECRET_KEY": "change-me",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "localhost",
    "DB_NAME": "pequeroku",
    "DB_USER": "pequeroku",
    "DB_PASSWORD": "pequeroku",
    "DB_HOST": "db",
    "DB_PORT": "5432",
    "REDIS_URL": "redis://redis:6379/1",
    "DJANGO_SUPERUSER_USERNAME": "admin",
    "DJANGO_SUPERUSER_PASSWORD": "adminpass",
    "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
}


def test_the_spec_docker_run_environment_serves_the_api_over_plain_http(
    project_copy: Path, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = base_env(DJANGO_SETTINGS_MODULE="pequeroku.settings", **SPEC_DOCKER_RUN)
    subprocess.run(  # as entrypoint.sh does before starting the server
        [str(VENV_BIN / "python"), "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
        cwd=project_copy, env=env, check=True, timeout=120,
    )  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "uvicorn", "pequeroku.asgi:application",
             "--port", str(port), "--lifespan", "off"],
            cwd=project_copy, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    headers = {"Host": "localhost"}
    try:
        wait_for(
            lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200,
            60,
            server,
            log.read_text,
        )

        api = httpx.get(f"{base}/api/containers/", headers=headers, timeout=10)
        login_page = httpx.get(f"{base}/admin/login/", headers=headers, timeout=10)
    finally:
        stop_group(server)

    assert api.status_code == 403, log.read_text()  # the API itself answers: log in first
    assert api.json()["code"] == "not_authenticated"
    assert "Strict-Transport-Security" not in api.headers
    assert login_page.status_code == 200
    csrf_cookie = login_page.headers["Set-Cookie"]
    assert "csrftoken=" in csrf_cookie
    assert "secure" not in csrf_cookie.lower()  # sent back over http, so a login can work


def test_production_on_sqlite_says_so_in_one_warning_line(project_copy: Path) -> None:
    env = base_env(
        DJANGO_SETTINGS_MODULE="pequeroku.settings",
        DEBUG="false",
        SECRET_KEY="x" * 60,
        DB_WAIT_SECONDS="5",
    )

    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pequeroku.startup", "wait-for-database"],
        cwd=project_copy, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert warning.startswith("entrypoint: WARNING: DEBUG=false without DB_NAME: running on SQLite")
    assert str(project_copy / "db.sqlite3") in warning


def test_production_on_postgresql_prints_no_warning(project_copy: Path) -> None:
    env = base_env(DJANGO_SETTINGS_MODULE="pequeroku.settings", **SPEC_DOCKER_RUN)
    code = "import django; django.setup(); from pequeroku import startup; "
    code += "print(startup.configuration_warnings())"

    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code],
        cwd=project_copy, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.stdout.strip() == "[]", result.stderr
