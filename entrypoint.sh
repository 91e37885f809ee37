#!/usr/bin/env bash
# Container entrypoint of the Pequeroku web service.
#
#   entrypoint.sh            load .env, wait for the database, migrate, collectstatic, create the
#                            DJANGO_SUPERUSER_* account once, then exec Gunicorn (Uvicorn workers)
#   entrypoint.sh CMD ...    load .env, wait for the database, then exec CMD (e.g. the compose
#                            reconciler: python manage.py reconcile --loop --interval 10)
#
# Variables (see .env.example): WORKERS (8), DJANGO_MODULE (pequeroku), BIND (0.0.0.0:8000),
# GUNICORN_TIMEOUT (60), DB_WAIT_SECONDS (60), DB_WAIT_INTERVAL (2), PYTHON (python).
# The real environment wins over .env. If the database never answers, the script exits 1 after
# printing one line that names the database it tried. Secrets can come from files instead
# (SECRET_KEY_FILE, DB_PASSWORD_FILE, REDIS_URL_FILE, DJANGO_SUPERUSER_PASSWORD_FILE ...: any
# setting NAME as NAME_FILE), e.g. compose or Docker secrets under /run/secrets; the superuser
# password and the node token are removed from the environment before Gunicorn starts.
set -euo pipefail

APP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$APP_DIR"

# KEY=VALUE lines; blank lines and comments skipped; optional "export " and matching quotes
# removed; variables already in the environment are kept.
load_dotenv() {
  local file=$1 line key value
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    line=${line#"${line%%[![:space:]]*}"}
    case "$line" in '' | '#'*) continue ;; esac
    line=${line#export }
    case "$line" in *=*) ;; *) continue ;; esac
    key=${line%%=*}
    key=${key%"${key##*[![:space:]]}"}
    value=${line#*=}
    [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    if [[ $value =~ ^\"(.*)\"$ ]] || [[ $value =~ ^\'(.*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    if [ -z "${!key+set}" ]; then
      export "$key=$value"
    fi
  done <"$file"
}

load_dotenv "$APP_DIR/.env"

PYTHON=${PYTHON:-python}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-pequeroku.settings}
export PYTHONUNBUFFERED=1

"$PYTHON" -m pequeroku.startup wait-for-database

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

echo "entrypoint: migrate"
"$PYTHON" manage.py migrate --no-input
echo "entrypoint: collectstatic"
"$PYTHON" manage.py collectstatic --no-input --verbosity 0
"$PYTHON" -m pequeroku.startup ensure-superuser
# Gunicorn lives for months and needs neither: keep them out of its environment.
unset DJANGO_SUPERUSER_PASSWORD DJANGO_SUPERUSER_PASSWORD_FILE NODE_AGENT_TOKEN

WORKERS=${WORKERS:-8}
DJANGO_MODULE=${DJANGO_MODULE:-pequeroku}
BIND=${BIND:-0.0.0.0:8000}
echo "entrypoint: gunicorn ${DJANGO_MODULE}.asgi:application on $BIND with $WORKERS workers"
exec "$PYTHON" -m gunicorn "${DJANGO_MODULE}.asgi:application" \
  --worker-class uvicorn_worker.UvicornWorker \
  --workers "$WORKERS" \
  --bind "$BIND" \
  --timeout "${GUNICORN_TIMEOUT:-60}" \
  --graceful-timeout 30 \
  --error-logfile -
