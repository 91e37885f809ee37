#!/usr/bin/env bash
# The whole test run (what `make test` and CI execute):
#   1. set up the environment (system packages, .venv) and build the guest image (cached);
#      then ruff (lint and format) must be clean;
#   2. the suite on SQLite + the in-memory channel layer, real VMs included, with coverage;
#   3. the integration marker against the machine's PostgreSQL and Redis.
# Extra arguments go to both pytest runs (e.g. scripts/test.sh -x -k quota).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_HOST=${PEQUEROKU_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${PEQUEROKU_TEST_PG_PORT:-5432}
REDIS_URL_TEST=${PEQUEROKU_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}

bash scripts/setup.sh
if [ -f scripts/build-guest-image.sh ]; then
  bash scripts/build-guest-image.sh
  export PEQUEROKU_REQUIRE_VM=${PEQUEROKU_REQUIRE_VM:-1}
fi

echo "== lint"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== unit and VM tests (SQLite, in-memory channel layer)"
.venv/bin/python -m pytest \
  --cov=vm_manager --cov=internal_config --cov=ai_services --cov=node_agent \
  --cov-report=term:skip-covered "$@"

answers() {  # host port
  .venv/bin/python - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

redis_hostport=${REDIS_URL_TEST#redis://}
redis_hostport=${redis_hostport%%/*}
if answers "$PG_HOST" "$PG_PORT" && answers "${redis_hostport%%:*}" "${redis_hostport##*:}"; then
  echo "== integration tests (PostgreSQL $PG_HOST:$PG_PORT, Redis $REDIS_URL_TEST)"
  set +e
  # Coverage appends to the first run's: the report counts what either run exercised.
  PEQUEROKU_TEST_POSTGRES=1 PEQUEROKU_TEST_REDIS="$REDIS_URL_TEST" \
    .venv/bin/python -m pytest -m integration \
    --cov=vm_manager --cov=internal_config --cov=ai_services --cov=node_agent --cov-append \
    --cov-report=term:skip-covered "$@"
  status=$?
  set -e
  # 5 = nothing selected (e.g. -k matched no integration test): not a failure.
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
elif [ "${CI:-}" = "true" ]; then
  echo "integration: PostgreSQL ($PG_HOST:$PG_PORT) or Redis ($REDIS_URL_TEST) does not answer" >&2
  exit 1
else
  echo "== integration tests skipped: PostgreSQL or Redis does not answer"
fi
