"""Settings, read from the environment (and ``.env`` beside manage.py when present).

With no DB_NAME the database is SQLite in the project folder. The channel layer (and cache) is
Redis at REDIS_URL when DEBUG=false, whether REDIS_URL is set or its default is used (several
workers cannot share an in-memory layer); in development it is in-memory unless REDIS_URL is
set. Production (DEBUG=false) refuses to start with the default SECRET_KEY. HTTPS=true turns on
the TLS-only switches (redirect, secure cookies, HSTS); without it the site works over plain
HTTP, as the spec's ``docker run -e DEBUG=false`` example expects.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from pequeroku.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env", override=False)

DEFAULT_SECRET_KEY = "thisisnotasecretkey"  # noqa: S105 - the spec's documented development default
SECRET_KEY = env_str("SECRET_KEY", DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", default=True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

REDIS_URL = env_str("REDIS_URL", "redis://redis:6379/1")
REDIS_PREFIX = env_str("REDIS_PREFIX", "web_service:")
# Redis whenever it can matter: in production always (the default URL is the compose service),
# in development only when asked for.
USE_REDIS = "REDIS_URL" in os.environ or "REDIS_URL_FILE" in os.environ or not DEBUG

# Used by entrypoint.sh; kept here so every documented variable has one home.
WORKERS = env_int("WORKERS", 8)
# Threads per worker process that serve plain HTTP requests (pequeroku.http_handler): the
# most requests one worker runs at once (each holds at most one database connection, taken
# from the worker's pool, DB_POOL_MAX_SIZE below). More threads only help requests that wait
# (node calls); CPU-bound ones contend for the GIL: through a server, the container list cost
# 3.9 ms of CPU a request on 1 thread, 4.8 ms on 2, 6.4 ms on 4 (docs/deploy.md).
HTTP_THREADS = env_int("HTTP_THREADS", 2)
if HTTP_THREADS < 1:
    raise ImproperlyConfigured("HTTP_THREADS must be at least 1.")
DJANGO_MODULE = env_str("DJANGO_MODULE", "pequeroku")

if not DEBUG and SECRET_KEY == DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured("DEBUG=false needs a real SECRET_KEY (the default is public).")

INSTALLED_APPS = [
    "daphne",
    "pequeroku.apps.AdminConfig",  # django.contrib.admin with the throttle-aware login
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "internal_config",
    "vm_manager",
    "ai_services",
]

MIDDLEWARE = [
    "pequeroku.middleware.RequestLogMiddleware",  # one log line per request, outermost
    "pequeroku.health.HealthCheckMiddleware",  # /healthz, /readyz before host validation
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "pequeroku.not_found.ApiNotFoundMiddleware",  # JSON 404 under /api/, after APPEND_SLASH
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost, so it sees a view's exception first: database or Redis down -> 503 JSON.
    "pequeroku.db_errors.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "pequeroku.urls"
WSGI_APPLICATION = "pequeroku.wsgi.application"
ASGI_APPLICATION = "pequeroku.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "pequeroku" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL connections, bounded: a pool per process (psycopg_pool, through Django) of at most
# DB_POOL_MAX_SIZE connections; a request waits up to DB_POOL_TIMEOUT seconds for one, then gets
# a 503 (pequeroku.db_errors). Under ASGI a "persistent" connection belongs to the thread of one
# request, so without the pool their number follows the traffic (docs/deploy.md).
# DB_POOL_MAX_SIZE=0: no pool, DB_CONN_MAX_AGE applies.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10)
if env_str("DB_NAME"):
    DATABASES = {
        "default": {
            "ENGINE": "pequeroku.postgresql",
            "NAME": env_str("DB_NAME"),
            "USER": env_str("DB_USER"),
            "PASSWORD": env_str("DB_PASSWORD"),
            "HOST": env_str("DB_HOST", "127.0.0.1"),
            "PORT": env_str("DB_PORT", "5432"),
            "CONN_MAX_AGE": 0 if DB_POOL_MAX_SIZE > 0 else env_int("DB_CONN_MAX_AGE", 60),
            # With the pool: a connection is checked when taken (one dropped by a restart is
            # replaced, not handed to a request), by pequeroku.db_pool's check: a round trip
            # only when the connection received something while it was idle.
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": (
                {
                    "pool": {
                        "min_size": min(2, DB_POOL_MAX_SIZE),
                        "max_size": DB_POOL_MAX_SIZE,
                        "timeout": env_int("DB_POOL_TIMEOUT", 5),
                    }
                }
                if DB_POOL_MAX_SIZE > 0
                else {}
            ),
        }
    }
else:
    # The web server and the reconcile loop write this file at the same time. A deferred
    # transaction that reads and then writes cannot wait for the other writer (SQLite answers
    # "database is locked" at once, busy timeout or not), so every transaction takes the write
    # lock when it begins (IMMEDIATE) and waits up to ``timeout`` seconds for it; WAL lets
    # readers go on meanwhile. The engine creates the file 0600.
    DATABASES = {
        "default": {
            "ENGINE": "pequeroku.sqlite",
            "NAME": BASE_DIR / "db.sqlite3",
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def channel_layer_keys(secret_key: str) -> list[str]:
    """Keys that authenticate (and encrypt) channel-layer messages.

    ``CHANNEL_LAYER_KEYS`` (comma-separated; the first encrypts, every one decrypts, so a key
    can be rotated), or one derived from SECRET_KEY for this purpose only.
    """
    configured = env_list("CHANNEL_LAYER_KEYS")
    if configured:
        return configured
    return [hmac.new(secret_key.encode(), b"pequeroku.channel-layer", hashlib.sha256).hexdigest()]


def redis_channel_layer(url: str, prefix: str, keys: list[str]) -> dict[str, object]:
    """The Redis channel layer's settings (also used by the test settings).

    ``url`` may carry credentials (``redis://:password@host:6379/1``, ``rediss://`` for TLS);
    every Redis client of the project (layer, revisions, cache, /readyz) is built from it.
    Messages are Fernet-encrypted and authenticated with ``keys``: one written to Redis by
    anyone without them is refused by the consumer it targets.
    """
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py >= 6 times reads out after 5 s, the same 5 s channels-redis blocks
        # for in BZPOPMIN: every idle consumer's receive loop would die after 5 s.
        "CONFIG": {
            "hosts": [{"address": url, "socket_timeout": 30}],
            "prefix": prefix,
            "symmetric_encryption_keys": keys,
        },
    }


if USE_REDIS:
    CHANNEL_LAYERS = {
        "default": redis_channel_layer(REDIS_URL, REDIS_PREFIX, channel_layer_keys(SECRET_KEY))
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Every password check (API login, admin login, HTTP Basic) goes through the login throttle.
AUTHENTICATION_BACKENDS = ["pequeroku.auth.ThrottledModelBackend"]
# Failed logins: free attempts per username and per client IP within the window, then a lock
# of LOGIN_LOCKOUT_SECONDS doubling with each further failure up to the maximum. The counters
# live in the cache (Redis when the channel layer is), shared by every worker.
LOGIN_FAILURES_PER_USERNAME = env_int("LOGIN_FAILURES_PER_USERNAME", 10)
LOGIN_FAILURES_PER_IP = env_int("LOGIN_FAILURES_PER_IP", 30)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 60)
LOGIN_LOCKOUT_MAX_SECONDS = env_int("LOGIN_LOCKOUT_MAX_SECONDS", 3600)
LOGIN_THROTTLE_WINDOW_SECONDS = env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 900)
if min(LOGIN_FAILURES_PER_USERNAME, LOGIN_FAILURES_PER_IP, LOGIN_LOCKOUT_SECONDS) < 1:
    raise ImproperlyConfigured("LOGIN_FAILURES_* and LOGIN_LOCKOUT_SECONDS must be at least 1.")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "/media/"
MEDIA_ROOT = BASE_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Security. HTTPS=true says "this site is reached over https, through a TLS proxy that sets
# X-Forwarded-Proto": it turns on every switch below, each of which can still be set alone.
# Off by default, also with DEBUG=false: a plain-HTTP server (the spec's docker run example,
# a port published for a test) must answer rather than redirect to an https that is not there.
HTTPS = env_bool("HTTPS", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=HTTPS)
if env_bool("SECURE_PROXY_SSL", default=HTTPS):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The client IP (audit rows, login and API throttles) is read from this META key only when it
# is set (e.g. HTTP_X_FORWARDED_FOR behind a trusted reverse proxy); otherwise REMOTE_ADDR.
# TRUSTED_PROXY_COUNT proxies append to it, so the client is that many hops from the right.
TRUSTED_PROXY_IP_HEADER = env_str("TRUSTED_PROXY_IP_HEADER")
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1)
if TRUSTED_PROXY_COUNT < 1:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be at least 1.")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "pequeroku.auth.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "pequeroku.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "pequeroku.throttling.AnonRateThrottle",
        "pequeroku.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("THROTTLE_ANON", "60/min"),
        "user": env_str("THROTTLE_USER", "600/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Pequeroku API",
    "DESCRIPTION": "Containers as real virtual machines, with an AI pair programmer.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema and its UIs describe every route: for logged-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# Uploads through the REST API (upload_file): larger bodies are refused with 413.
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 32 * 1024 * 1024)
# Every other request body (API JSON, admin forms, login): larger ones are refused with 413
# before Django reads them (pequeroku.body_limit, under ASGI).
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 1024 * 1024)
# Open sockets (console, editor and AI together) and terminal sessions per user, per worker
# process; beyond them a socket gets an error event and closes 4429 (docs/sockets.md).
SOCKETS_MAX_PER_USER = env_int("SOCKETS_MAX_PER_USER", 24)
TERMINALS_MAX_PER_USER = env_int("TERMINALS_MAX_PER_USER", 16)
# Audit rows of polled reads (user.info) are inserted in batches this often (seconds) by a
# background thread, at shutdown and at the next start (internal_config.audit_batch); 0 writes
# them in the request.
AUDIT_DEFER_SECONDS = env_float("AUDIT_DEFER_SECONDS", 1.0)
# Where each web process spools those rows until they are inserted: they survive the process
# being killed, so keep it on a volume that outlives the container (docker-compose.yml).
AUDIT_SPOOL_DIR = Path(env_str("AUDIT_SPOOL_DIR", str(BASE_DIR / "var" / "audit-spool")))
# exec_command: seconds a command may run before it is killed.
EXEC_TIMEOUT_SECONDS = env_int("EXEC_TIMEOUT_SECONDS", 30)


def redis_cache(url: str, prefix: str) -> dict[str, object]:
    """The Redis cache's settings (also used by the tests): one connection pool per process
    (``pequeroku.redis_pool``), not one per request."""
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": prefix,
        "OPTIONS": {"pool_class": "pequeroku.redis_pool.SharedConnectionPool"},
    }


# Throttle counters: shared by every worker through Redis when it is used.
if USE_REDIS:
    CACHES = {"default": redis_cache(REDIS_URL, REDIS_PREFIX)}

# Compute nodes
NODE_DRIVER = env_str("NODE_DRIVER", "vm_manager.drivers.http.HttpNodeDriver")
NODE_HEARTBEAT_TIMEOUT_SECONDS = env_int("NODE_HEARTBEAT_TIMEOUT_SECONDS", 60)
# A node whose data disk has less free space than this (MB) gets no new containers.
NODE_MIN_FREE_DISK_MB = env_int("NODE_MIN_FREE_DISK_MB", 2048)
VM_IMAGE = env_str("VM_IMAGE", "default")
# PEM file of a private CA that signed the agents' TLS certificates (nodes with https URLs);
# empty: the system's trusted CAs. Verification is never off.
NODE_TLS_CA_FILE = env_str("NODE_TLS_CA_FILE", "")
# Run a targeted reconcile in a background thread after a state change commits. Cron's
# ``manage.py reconcile`` converges anyway; this only makes changes take effect sooner.
RECONCILE_IN_BACKGROUND = env_bool("RECONCILE_IN_BACKGROUND", default=True)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "text")
# One line per request at INFO (pequeroku.request); false keeps only its warnings and errors
# (``make run`` sets it unless PEQUEROKU_VERBOSE=1, so the terminal stays readable).
LOG_REQUESTS = env_bool("LOG_REQUESTS", default=True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "pequeroku.logging.JsonFormatter"},
    },
    "filters": {
        "disconnects_at_debug": {"()": "pequeroku.logging.DisconnectsAtDebug"},
        "tracebacks_only": {"()": "pequeroku.logging.TracebacksOnly"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["disconnects_at_debug"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The connection pool retries in the background while PostgreSQL is down and logs every
        # attempt with the server's address; what failed is reported once by the caller (a 503,
        # the reconcile loop's line).
        "psycopg.pool": {"level": "ERROR"},
        # pequeroku.request already logs every request once; keep Django's 5xx tracebacks only.
        "django.request": {"level": "ERROR", "filters": ["tracebacks_only"]},
        "pequeroku.request": {"level": "NOTSET" if LOG_REQUESTS else "WARNING"},
        # Uvicorn (also as Gunicorn's worker) logs through handlers of its own, not "console":
        # the disconnect rule goes on the logger it reports application errors on. No level
        # here, so --log-level still decides.
        "uvicorn.error": {"filters": ["disconnects_at_debug"]},
    },
}
