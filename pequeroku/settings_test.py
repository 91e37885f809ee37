"""Test settings: SQLite and the in-memory channel layer, no PostgreSQL or Redis needed.

The integration marker switches to the machine's PostgreSQL and Redis through
PEQUEROKU_TEST_POSTGRES / PEQUEROKU_TEST_REDIS (see tests/conftest.py).
"""

import os

os.environ.pop("REDIS_URL", None)
os.environ.pop("DB_NAME", None)
os.environ["DEBUG"] = "true"

from pequeroku.settings import *  # noqa: F403

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
if os.environ.get("PEQUEROKU_TEST_POSTGRES"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PEQUEROKU_TEST_PG_NAME", "test"),
            "USER": os.environ.get("PEQUEROKU_TEST_PG_USER", "postgres"),
            "HOST": os.environ.get("PEQUEROKU_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("PEQUEROKU_TEST_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("PEQUEROKU_TEST_PG_TEST_NAME", "test_pequeroku")},
        }
    }
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if os.environ.get("PEQUEROKU_TEST_REDIS"):
    CHANNEL_LAYERS = {
        "default": redis_channel_layer(  # noqa: F405
            os.environ["PEQUEROKU_TEST_REDIS"],
            "pequeroku-test:",
            channel_layer_keys(SECRET_KEY),  # noqa: F405
        )
    }
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
NODE_DRIVER = "vm_manager.drivers.memory.InMemoryNodeDriver"
RECONCILE_IN_BACKGROUND = False
# Rows land in the request, where a test's transaction sees them (tests/internal_config covers
# the batched path).
AUDIT_DEFER_SECONDS = 0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {"anon": "10000/min", "user": "10000/min"},
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
# Tests serve no static files; WhiteNoise would warn that STATIC_ROOT was never collected.
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("whitenoise.")]  # noqa: F405
