#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine (no PostgreSQL, Redis or Docker needed):
#
#   1. scripts/setup.sh: QEMU, the guest kernel and .venv (skipped with --no-setup);
#   2. scripts/build-guest-image.sh: the guest image, built once and cached;
#   3. migrate (SQLite db.sqlite3, in-memory channel layer, DEBUG=true);
#   4. an "admin" superuser whose generated password is printed the first time only;
#   5. a node agent token and data directory under the state directory (.local/);
#   6. starts the node agent, registers it as node "local", starts the reconcile loop and the
#      web server (Uvicorn, ONE worker: the in-memory channel layer is per process);
#   7. Ctrl-C stops the reconcile loop, the web server, the VMs and the agent.
#
# Options (or environment variables):
#   --no-setup          PEQUEROKU_NO_SETUP=1        skip setup.sh and the image build
#   --port N            PEQUEROKU_PORT=8000         web server port
#   --host H            PEQUEROKU_HOST=127.0.0.1    web server address
#   --state-dir DIR     PEQUEROKU_STATE_DIR=.local  agent token, VM disks, logs
#                       PEQUEROKU_AGENT_PORT=8081   node agent port (127.0.0.1 only)
#                       PEQUEROKU_RECONCILE_INTERVAL=5  seconds between reconcile passes
#                       PEQUEROKU_IMAGE_DIR=~/.cache/pequeroku/images
#                       PEQUEROKU_PYTHON=.venv/bin/python
#                       PEQUEROKU_KEEP_VMS=1        leave the VMs running on exit
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

NO_SETUP=${PEQUEROKU_NO_SETUP:-0}
PORT=${PEQUEROKU_PORT:-8000}
HOST=${PEQUEROKU_HOST:-127.0.0.1}
STATE_DIR=${PEQUEROKU_STATE_DIR:-$REPO/.local}
AGENT_PORT=${PEQUEROKU_AGENT_PORT:-8081}
RECONCILE_INTERVAL=${PEQUEROKU_RECONCILE_INTERVAL:-5}
KEEP_VMS=${PEQUEROKU_KEEP_VMS:-0}

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --no-setup) NO_SETUP=1 ;;
    --port) PORT=$2; shift ;;
    --host) HOST=$2; shift ;;
    --state-dir) STATE_DIR=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run-local: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "run-local: $*"; }

IMAGE_DIR=${PEQUEROKU_IMAGE_DIR:-$HOME/.cache/pequeroku/images}
if [ "$NO_SETUP" != 1 ]; then
  bash scripts/setup.sh
  if [ -f scripts/build-guest-image.sh ]; then
    # debootstrap needs root (setup.sh has the same rule for apt); the image stays in this
    # user's cache, readable by the agent.
    if [ "$(id -u)" = 0 ]; then
      PEQUEROKU_IMAGE_DIR=$IMAGE_DIR bash scripts/build-guest-image.sh
    else
      sudo env "PEQUEROKU_IMAGE_DIR=$IMAGE_DIR" bash scripts/build-guest-image.sh
    fi
  fi
fi

PY=${PEQUEROKU_PYTHON:-$REPO/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "run-local: $PY is missing; run without --no-setup once (or set PEQUEROKU_PYTHON)" >&2
  exit 1
fi
if [ ! -f "$IMAGE_DIR/${VM_IMAGE:-default}/rootfs.qcow2" ]; then
  echo "run-local: no guest image in $IMAGE_DIR/${VM_IMAGE:-default}; run bash scripts/build-guest-image.sh" >&2
  exit 1
fi

# Local development settings: SQLite and the in-memory channel layer unless the environment
# (or .env) says otherwise; DEBUG so Django serves the admin's static files.
export DEBUG=true
export DJANGO_SETTINGS_MODULE=pequeroku.settings
export PYTHONUNBUFFERED=1

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
LOG_DIR=$STATE_DIR/logs
DATA_DIR=$STATE_DIR/node-data
TOKEN_FILE=$STATE_DIR/node.token
mkdir -p "$LOG_DIR"
(umask 077 && mkdir -p "$DATA_DIR")
if [ ! -s "$TOKEN_FILE" ]; then
  (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$TOKEN_FILE")
fi
chmod 600 "$TOKEN_FILE"

say "migrate (SQLite $REPO/db.sqlite3)"
"$PY" manage.py migrate --no-input --verbosity 0
"$PY" -m pequeroku.startup local-admin
mkdir -p staticfiles

PIDS=()
AGENT_PID=
RECONCILE_PID=
WEB_PID=
stopping=0

stop_pid() {  # pid: TERM, wait up to 15 s, then KILL
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_vms() {  # ask the agent to power off every VM (ACPI, hard kill after 10 s), in parallel
  [ "$KEEP_VMS" = 1 ] && return 0
  [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null || return 0
  "$PY" - "http://127.0.0.1:$AGENT_PORT" "$TOKEN_FILE" <<'PY' || true
import concurrent.futures, pathlib, sys
import httpx
url, token = sys.argv[1], pathlib.Path(sys.argv[2]).read_text().strip()
client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=40)
running = [vm["vm_id"] for vm in client.get("/vms").json() if vm.get("state") == "running"]
if running:
    print(f"run-local: stopping {len(running)} VM(s)", flush=True)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda vm: client.post(f"/vms/{vm}/stop", params={"timeout": 10}), running))
PY
}

cleanup() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  echo
  say "stopping"
  # The reconcile loop first, so it does not start the VMs again; the agent last.
  stop_pid "$RECONCILE_PID"
  stop_pid "$WEB_PID"
  stop_vms
  stop_pid "$AGENT_PID"
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "node agent on 127.0.0.1:$AGENT_PORT (log $LOG_DIR/node-agent.log)"
# Each child runs in its own session (setsid): the terminal's Ctrl-C reaches only this script,
# which then stops them in order.
setsid "$PY" -m node_agent --listen "127.0.0.1:$AGENT_PORT" --data-dir "$DATA_DIR" \
  --image-dir "$IMAGE_DIR" --token-file "$TOKEN_FILE" >>"$LOG_DIR/node-agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")

# The agent probes KVM at startup (up to ~8 s); wait for /health.
"$PY" - "http://127.0.0.1:$AGENT_PORT" "$TOKEN_FILE" "$AGENT_PID" <<'PY'
import os, pathlib, sys, time
import httpx
url, token, pid = sys.argv[1], pathlib.Path(sys.argv[2]).read_text().strip(), int(sys.argv[3])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("run-local: the node agent exited; see its log")
    try:
        r = httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if r.status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
sys.exit("run-local: the node agent did not answer within 60 s; see its log")
PY

"$PY" manage.py register_node local --url "http://127.0.0.1:$AGENT_PORT" --token-file "$TOKEN_FILE"

say "reconcile loop every ${RECONCILE_INTERVAL}s (log $LOG_DIR/reconcile.log)"
setsid "$PY" manage.py reconcile --loop --interval "$RECONCILE_INTERVAL" >>"$LOG_DIR/reconcile.log" 2>&1 &
RECONCILE_PID=$!
PIDS+=("$RECONCILE_PID")

say "web server on http://$HOST:$PORT/ (admin /admin/, API /api/, docs /api/schema/swagger-ui/)"
setsid "$PY" -m uvicorn pequeroku.asgi:application --host "$HOST" --port "$PORT" --workers 1 \
  --lifespan off --no-access-log &
WEB_PID=$!
PIDS+=("$WEB_PID")
say "Ctrl-C stops everything"

# Run until Ctrl-C, or until one of the three exits (then stop the others).
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
if [ "$stopping" = 0 ]; then
  say "a process exited (status $status); logs in $LOG_DIR"
  exit 1
fi
