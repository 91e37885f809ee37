"""Start-up steps used by ``entrypoint.sh`` and ``scripts/run-local.sh``.

    python -m pequeroku.startup wait-for-database   # bounded retry, one clear line on failure;
                                                    # first, one WARNING line per risky setting
    python -m pequeroku.startup ensure-superuser    # from DJANGO_SUPERUSER_*, only once
    python -m pequeroku.startup local-admin         # admin with a password printed once

Exit status: 0 done, 1 the database never answered, 2 configuration error. Failures print one
line on stderr prefixed ``entrypoint:``, never a traceback and never a password.
"""

from __future__ import annotations

import os
import secrets
import sys
import time

DEFAULT_WAIT_SECONDS = 60.0
DEFAULT_WAIT_INTERVAL = 2.0
CONNECT_TIMEOUT_SECONDS = 5


def _say(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(f"entrypoint: {message}\n")
    stream.flush()


def _out(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def describe_database() -> str:
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"SQLite {settings['NAME']}"
    host = settings.get("HOST") or "localhost"
    port = settings.get("PORT") or "5432"
    return f"{connection.vendor} database {settings['NAME']!r} at {host}:{port}"


def configuration_warnings() -> list[str]:
    """Settings that start but are probably not what a production operator meant."""
    from django.conf import settings
    from django.db import connection

    warnings = []
    if not settings.DEBUG and connection.vendor == "sqlite":
        warnings.append(
            f"DEBUG=false without DB_NAME: running on SQLite {connection.settings_dict['NAME']}, "
            "not PostgreSQL; set DB_NAME, DB_USER, DB_PASSWORD and DB_HOST"
        )
    return warnings


def wait_for_database(timeout: float, interval: float) -> int:
    """Connect until it works or ``timeout`` seconds passed; 0 on success, 1 otherwise."""
    from django.db import OperationalError, connection

    if connection.vendor == "postgresql":
        # Bound every attempt, so a host that drops packets cannot stall the loop.
        options = connection.settings_dict.setdefault("OPTIONS", {})
        options.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        # One plain connection per attempt: a pool would wait its own timeout and log retries.
        options.pop("pool", None)
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            connection.ensure_connection()
        except OperationalError as exc:
            connection.close()
            if time.monotonic() + interval > deadline:
                _say(
                    f"{describe_database()} did not answer after {attempts} attempts in "
                    f"{timeout:g} s ({_first_line(exc)}); check DB_HOST, DB_PORT, DB_NAME, "
                    "DB_USER and that PostgreSQL is running",
                    err=True,
                )
                return 1
            time.sleep(interval)
        else:
            connection.close()
            if attempts > 1:
                _say(f"{describe_database()} answered after {attempts} attempts")
            return 0


def ensure_superuser() -> int:
    """Create the DJANGO_SUPERUSER_* account when both name and password are set and it does
    not exist yet. An existing account is left alone (its password is never reset)."""
    from django.contrib.auth import get_user_model
    from django.db import IntegrityError

    from pequeroku.env import env_str

    username = env_str("DJANGO_SUPERUSER_USERNAME").strip()
    password = env_str("DJANGO_SUPERUSER_PASSWORD")
    email = env_str("DJANGO_SUPERUSER_EMAIL").strip()
    if not username or not password:
        return 0
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        _say(f"superuser {username!r} already exists; left unchanged")
        return 0
    try:
        user_model.objects.create_superuser(username=username, email=email, password=password)
    except IntegrityError:  # another replica created it at the same moment
        _say(f"superuser {username!r} already exists; left unchanged")
        return 0
    _say(f"superuser {username!r} created")
    return 0


def local_admin(username: str = "admin") -> int:
    """Create ``username`` as a superuser with a generated password the first time, printing
    the password that one time only (it is stored nowhere else). Later runs say it exists."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        _out(
            f"admin user {username!r} exists (forgot the password? "
            f"python manage.py changepassword {username})"
        )
        return 0
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email="", password=password)
    _out(f"admin user created: username {username!r} password {password!r} (shown only this once)")
    return 0


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pequeroku.settings")
    from django.core.exceptions import ImproperlyConfigured

    from pequeroku.env import env_float

    if not argv or argv[0] not in {"wait-for-database", "ensure-superuser", "local-admin"}:
        _say(
            "usage: python -m pequeroku.startup wait-for-database|ensure-superuser|local-admin",
            err=True,
        )
        return 2
    command = argv[0]
    try:
        import django

        django.setup()
        if command == "wait-for-database":
            for warning in configuration_warnings():
                _say(f"WARNING: {warning}", err=True)
            return wait_for_database(
                env_float("DB_WAIT_SECONDS", DEFAULT_WAIT_SECONDS),
                env_float("DB_WAIT_INTERVAL", DEFAULT_WAIT_INTERVAL),
            )
    except ImproperlyConfigured as exc:
        _say(f"configuration error: {_first_line(exc)}", err=True)
        return 2
    if command == "ensure-superuser":
        return ensure_superuser()
    return local_admin()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
