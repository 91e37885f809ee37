"""Start-up steps: the superuser from DJANGO_SUPERUSER_* once, the local admin's password
printed once, the database wait bounded."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from pequeroku import startup


@pytest.fixture
def superuser_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "first-password-123")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "admin@example.com")


@pytest.mark.django_db
def test_superuser_is_created_from_the_environment(superuser_env: None) -> None:
    assert startup.ensure_superuser() == 0

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password("first-password-123")


@pytest.mark.django_db
def test_an_existing_superuser_keeps_its_password(
    superuser_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    startup.ensure_superuser()
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "second-password-456")

    assert startup.ensure_superuser() == 0

    assert User.objects.filter(username="admin").count() == 1
    assert User.objects.get(username="admin").check_password("first-password-123")


@pytest.mark.django_db
def test_no_superuser_without_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)

    assert startup.ensure_superuser() == 0

    assert not User.objects.exists()


@pytest.mark.django_db
def test_local_admin_password_is_printed_only_the_first_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    startup.local_admin()
    first = capsys.readouterr().out
    password = first.split("password '", 1)[1].split("'", 1)[0]

    startup.local_admin()
    second = capsys.readouterr().out

    assert User.objects.get(username="admin").check_password(password)
    assert len(password) >= 16
    assert password not in second
    assert "exists" in second


@pytest.mark.django_db
def test_waiting_for_an_answering_database_returns_at_once() -> None:
    assert startup.wait_for_database(timeout=5, interval=1) == 0


@pytest.mark.django_db
def test_the_superuser_password_can_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    secret = tmp_path / "admin_password"
    secret.write_text("password-from-a-file-789\n")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD_FILE", str(secret))

    assert startup.ensure_superuser() == 0

    assert User.objects.get(username="admin").check_password("password-from-a-file-789")
