"""Settings are read from the environment; each case runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'db': settings.DATABASES['default']['ENGINE'], "
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], 'debug': settings.DEBUG, "
    "'hosts': settings.ALLOWED_HOSTS}))"
)
CLEARED = ("SECRET_KEY", "DEBUG", "DB_NAME", "REDIS_URL", "ALLOWED_HOSTS", "HTTPS")


def run_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED}
    clean.update({"DJANGO_SETTINGS_MODULE": "pequeroku.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_newcomer_defaults_are_sqlite_and_in_memory_layer():
    result = run_settings()

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "db": "pequeroku.sqlite",  # django.db.backends.sqlite3, files created 0600
        "layer": "channels.layers.InMemoryChannelLayer",
        "debug": True,
        "hosts": ["localhost", "127.0.0.1", "[::1]"],
    }


def test_db_name_and_redis_url_switch_to_postgresql_and_redis():
    result = run_settings(DB_NAME="pequeroku", REDIS_URL="redis://127.0.0.1:6379/1")

    assert json.loads(result.stdout)["db"] == "pequeroku.postgresql"  # Django's, pool check
    assert json.loads(result.stdout)["layer"] == "channels_redis.core.RedisChannelLayer"


def test_production_refuses_the_default_secret_key():
    result = run_settings(DEBUG="false", REDIS_URL="redis://127.0.0.1:6379/1")

    assert result.returncode != 0
    assert "DEBUG=false needs a real SECRET_KEY" in result.stderr


def test_production_uses_redis_at_the_default_url_when_redis_url_is_unset():
    result = run_layer_settings(DEBUG="false", SECRET_KEY="x" * 60)

    assert result["layer"] == "channels_redis.core.RedisChannelLayer"
    assert result["url"] == "redis://redis:6379/1"
    assert result["cache"] == "redis://redis:6379/1"


def test_development_keeps_the_in_memory_layer_unless_redis_url_is_set():
    result = run_settings(DEBUG="true")

    assert json.loads(result.stdout)["layer"] == "channels.layers.InMemoryChannelLayer"


def test_unreadable_boolean_is_a_clear_error():
    result = run_settings(DEBUG="maybe")

    assert result.returncode != 0
    assert "DEBUG must be true or false, got 'maybe'" in result.stderr


def test_allowed_hosts_is_comma_separated():
    result = run_settings(ALLOWED_HOSTS="api.example.com, localhost")

    assert json.loads(result.stdout)["hosts"] == ["api.example.com", "localhost"]


LAYER_PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "layer = settings.CHANNEL_LAYERS['default']; "
    "print(json.dumps({'layer': layer['BACKEND'], "
    "'url': layer['CONFIG']['hosts'][0]['address'], "
    "'keys': layer['CONFIG']['symmetric_encryption_keys'], "
    "'cache': settings.CACHES['default']['LOCATION']}))"
)


def run_layer_settings(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in (*CLEARED, "CHANNEL_LAYER_KEYS")}
    clean.update({"DJANGO_SETTINGS_MODULE": "pequeroku.settings", **env})
    result = subprocess.run(
        [sys.executable, "-c", LAYER_PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_redis_layer_messages_are_authenticated_with_a_key_derived_from_the_secret_key():
    url = "redis://:pw@127.0.0.1:6379/1"
    first = run_layer_settings(REDIS_URL=url, SECRET_KEY="a" * 50)
    other = run_layer_settings(REDIS_URL=url, SECRET_KEY="b" * 50)

    assert len(first["keys"]) == 1
    assert first["keys"] != other["keys"]
    assert "a" * 50 not in first["keys"][0]  # derived for this purpose, not the key itself
    assert first["cache"] == url  # the same URL, password included, for the cache


def test_channel_layer_keys_can_be_set_and_rotated():
    config = run_layer_settings(REDIS_URL="redis://127.0.0.1:6379/1", CHANNEL_LAYER_KEYS="new,old")

    assert config["keys"] == ["new", "old"]


def test_trusted_proxy_count_must_be_positive():
    result = run_settings(TRUSTED_PROXY_COUNT="0")

    assert result.returncode != 0
    assert "TRUSTED_PROXY_COUNT must be at least 1" in result.stderr


REQUEST_LOG_PROBE = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.LOGGING['loggers']['pequeroku.request']['level'])"
)


@pytest.mark.parametrize(("value", "level"), [(None, "NOTSET"), ("false", "WARNING")])
def test_log_requests_false_keeps_only_request_warnings_and_errors(value, level):
    env = {k: v for k, v in os.environ.items() if k not in (*CLEARED, "LOG_REQUESTS")}
    env["DJANGO_SETTINGS_MODULE"] = "pequeroku.settings"
    if value is not None:
        env["LOG_REQUESTS"] = value
    result = subprocess.run(
        [sys.executable, "-c", REQUEST_LOG_PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.stdout.strip() == level, result.stderr


SECURITY_PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps([settings.SECURE_SSL_REDIRECT, settings.SESSION_COOKIE_SECURE, "
    "settings.CSRF_COOKIE_SECURE, settings.SECURE_HSTS_SECONDS, "
    "getattr(settings, 'SECURE_PROXY_SSL_HEADER', None)]))"
)
PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "x" * 60}


def security(**env: str) -> list[object]:
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("SECURE")}
    clean.update({"DJANGO_SETTINGS_MODULE": "pequeroku.settings", **env})
    result = subprocess.run(
        [sys.executable, "-c", SECURITY_PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_production_without_https_serves_plain_http():
    assert security(**PRODUCTION) == [False, False, False, 0, None]


def test_https_true_turns_on_every_tls_only_switch():
    assert security(**PRODUCTION, HTTPS="true") == [
        True,
        True,
        True,
        31536000,
        ["HTTP_X_FORWARDED_PROTO", "https"],
    ]


def test_one_switch_can_be_turned_off_under_https():
    assert security(**PRODUCTION, HTTPS="true", SECURE_HSTS_SECONDS="0")[3] == 0


def test_an_empty_switch_follows_https():
    assert security(**PRODUCTION, HTTPS="true", SECURE_SSL_REDIRECT="")[0] is True


FILE_PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps([settings.SECRET_KEY, settings.DATABASES['default']['PASSWORD']]))"
)


def test_secrets_can_be_read_from_files(tmp_path: Path):
    (tmp_path / "secret_key").write_text("k" * 60 + "\n")
    (tmp_path / "db_password").write_text("pw from a file\n")
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(
        DJANGO_SETTINGS_MODULE="pequeroku.settings",
        DEBUG="false",
        REDIS_URL="redis://127.0.0.1:6379/1",
        DB_NAME="pequeroku",
        SECRET_KEY_FILE=str(tmp_path / "secret_key"),
        DB_PASSWORD_FILE=str(tmp_path / "db_password"),
    )
    result = subprocess.run(
        [sys.executable, "-c", FILE_PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert json.loads(result.stdout) == ["k" * 60, "pw from a file"], result.stderr


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path):
    (tmp_path / "secret_key").write_text("k" * 60)

    result = run_settings(SECRET_KEY="x" * 60, SECRET_KEY_FILE=str(tmp_path / "secret_key"))

    assert result.returncode != 0
    assert "set SECRET_KEY or SECRET_KEY_FILE, not both" in result.stderr


def test_an_unreadable_secret_file_is_a_clear_error(tmp_path: Path):
    result = run_settings(SECRET_KEY_FILE=str(tmp_path / "missing"))

    assert result.returncode != 0
    assert f"SECRET_KEY_FILE: cannot read {tmp_path / 'missing'} (No such file or directory)" in (
        result.stderr
    )
