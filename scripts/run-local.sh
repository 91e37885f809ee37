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
#   7. once /readyz answers, one block with the URLs and the admin password;
#   8. Ctrl-C stops the reconcile loop, the web server, the VMs and the agent, then exits 0.
#
# One progress line per phase with its duration; the tools' own output (apt, pip, the image
# build, migrate) goes to log files under the state directory, named when a phase fails.
# Request log lines are off (warnings and errors still show); PEQUEROKU_VERBOSE=1 brings them
# and Uvicorn's own lines back.
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
#                       PEQUEROKU_VERBOSE=1         log every request on the terminal
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
VERBOSE=${PEQUEROKU_VERBOSE:-0}

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
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

STARTED=$EPOCHREALTIME
PHASE=
PHASE_STARTED=
READY=0

say() { echo "run-local: $*"; }
seconds_since() { LC_ALL=C awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

begin() {  # one progress line per phase: "run-local: <phase> ... done (N s)"
  PHASE=$1
  PHASE_STARTED=$EPOCHREALTIME
  printf 'run-local: %s ... ' "$PHASE"
}
finish() {
  printf 'done (%s s)\n' "$(seconds_since "$PHASE_STARTED")"
  PHASE=
}
fail() {  # message: end the open progress line, say what failed, exit 1
  [ -n "$PHASE" ] && printf 'failed\n'
  PHASE=
  echo "run-local: $*" >&2
  exit 1
}
logged() {  # log, command...: run with its output appended to log; fail naming the log
  local log=$1
  shift
  if ! "$@" >>"$log" 2>&1; then
    local what=$PHASE
    [ -n "$PHASE" ] && printf 'failed\n'
    PHASE=
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    fail "$what failed; full output in $log"
  fi
}

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
LOG_DIR=$STATE_DIR/logs
DATA_DIR=$STATE_DIR/node-data
TOKEN_FILE=$STATE_DIR/node.token
mkdir -p "$LOG_DIR"
RUN_LOG=$LOG_DIR/run-local.log
: >"$RUN_LOG"

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
  "$PY" - "http://127.0.0.1:$AGENT_PORT" "$TOKEN_FILE" 2>>"$RUN_LOG" <<'PY' || true
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
  [ -n "$PHASE" ] && printf 'interrupted\n'
  PHASE=
  [ ${#PIDS[@]} -gt 0 ] || return 0
  say "stopping"
  # The reconcile loop first, so it does not start the VMs again; the agent last.
  stop_pid "$RECONCILE_PID"
  stop_pid "$WEB_PID"
  stop_vms
  stop_pid "$AGENT_PID"
  say "stopped"
}
# Ctrl-C once everything runs is how one stops it: exit 0 after the clean stop. Before that it
# interrupts the start-up (130).
on_signal() {
  if [ "$READY" = 1 ]; then exit 0; else exit "$1"; fi
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

IMAGE_DIR=${PEQUEROKU_IMAGE_DIR:-$HOME/.cache/pequeroku/images}
if [ "$NO_SETUP" != 1 ]; then
  begin "setup: system packages and Python environment"
  PEQUEROKU_SETUP_LOG=$LOG_DIR/setup.log bash scripts/setup.sh >>"$RUN_LOG" 2>&1 ||
    fail "setup failed; full output in $LOG_DIR/setup.log (and $RUN_LOG)"
  finish
  if [ -f scripts/build-guest-image.sh ]; then
    begin "guest image (built once, cached in $IMAGE_DIR)"
    # debootstrap needs root (setup.sh has the same rule for apt); the image stays in this
    # user's cache, readable by the agent.
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    logged "$LOG_DIR/guest-image.log" "${sudo_cmd[@]}" env "PEQUEROKU_IMAGE_DIR=$IMAGE_DIR" \
      bash scripts/build-guest-image.sh
    finish
  fi
fi

PY=${PEQUEROKU_PYTHON:-$REPO/.venv/bin/python}
if [ ! -x "$PY" ]; then
  fail "$PY is missing; run without --no-setup once (or set PEQUEROKU_PYTHON)"
fi
if [ ! -f "$IMAGE_DIR/${VM_IMAGE:-default}/rootfs.qcow2" ]; then
  fail "no guest image in $IMAGE_DIR/${VM_IMAGE:-default}; run bash scripts/build-guest-image.sh"
fi

# Local development settings: SQLite and the in-memory channel layer unless the environment
# (or .env) says otherwise; DEBUG so Django serves the admin's static files.
export DEBUG=true
export DJANGO_SETTINGS_MODULE=pequeroku.settings
export PYTHONUNBUFFERED=1
if [ "$VERBOSE" = 1 ]; then
  export LOG_REQUESTS=true
  UVICORN_LOG_LEVEL=info
else
  export LOG_REQUESTS=false
  UVICORN_LOG_LEVEL=warning
fi

(umask 077 && mkdir -p "$DATA_DIR")
if [ ! -s "$TOKEN_FILE" ]; then
  (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$TOKEN_FILE")
fi
chmod 600 "$TOKEN_FILE"

begin "database (SQLite $REPO/db.sqlite3)"
logged "$RUN_LOG" "$PY" manage.py migrate --no-input --verbosity 0
ADMIN_LINE=$("$PY" -m pequeroku.startup local-admin 2>>"$RUN_LOG") ||
  fail "creating the admin user failed; see $RUN_LOG"
mkdir -p staticfiles
finish

wait_http() {  # url pid seconds [token-file]: 0 once url answers 200; non-zero if pid exits
  "$PY" - "$@" 2>>"$RUN_LOG" <<'PY'
import os, pathlib, sys, time
import httpx
url, pid, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
headers = {}
if len(sys.argv) > 4:
    headers["Authorization"] = f"Bearer {pathlib.Path(sys.argv[4]).read_text().strip()}"
deadline = time.monotonic() + seconds
try:
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(3)
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                sys.exit(0)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(4)
PY
}

begin "node agent on 127.0.0.1:$AGENT_PORT (log $LOG_DIR/node-agent.log)"
# Each child runs in its own session (setsid): the terminal's Ctrl-C reaches only this script,
# which then stops them in order.
setsid "$PY" -m node_agent --listen "127.0.0.1:$AGENT_PORT" --data-dir "$DATA_DIR" \
  --image-dir "$IMAGE_DIR" --token-file "$TOKEN_FILE" >>"$LOG_DIR/node-agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
# The agent probes KVM and its isolation at start-up (up to ~8 s); wait for /health.
wait_http "http://127.0.0.1:$AGENT_PORT/health" "$AGENT_PID" 60 "$TOKEN_FILE" ||
  fail "the node agent did not come up within 60 s; see $LOG_DIR/node-agent.log"
logged "$RUN_LOG" "$PY" manage.py register_node local --url "http://127.0.0.1:$AGENT_PORT" \
  --token-file "$TOKEN_FILE"
finish

begin "reconcile loop every ${RECONCILE_INTERVAL}s (log $LOG_DIR/reconcile.log)"
setsid "$PY" manage.py reconcile --loop --interval "$RECONCILE_INTERVAL" >>"$LOG_DIR/reconcile.log" 2>&1 &
RECONCILE_PID=$!
PIDS+=("$RECONCILE_PID")
finish

begin "web server on http://$HOST:$PORT/"
# Its warnings and errors stay on this terminal.
setsid "$PY" -m uvicorn pequeroku.asgi:application --host "$HOST" --port "$PORT" --workers 1 \
  --lifespan off --no-access-log --log-level "$UVICORN_LOG_LEVEL" &
WEB_PID=$!
PIDS+=("$WEB_PID")
PROBE_HOST=$HOST
case "$PROBE_HOST" in 0.0.0.0) PROBE_HOST=127.0.0.1 ;; :: | "[::]") PROBE_HOST="[::1]" ;; esac
wait_http "http://$PROBE_HOST:$PORT/readyz" "$WEB_PID" 60 ||
  fail "the web server did not answer /readyz within 60 s"
finish
READY=1

BASE="http://$HOST:$PORT"
RULE="------------------------------------------------------------------------------"
HINT=" PEQUEROKU_VERBOSE=1 shows every request."
[ "$VERBOSE" = 1 ] && HINT=
cat <<EOF
run-local: ready in $(seconds_since "$STARTED") s
$RULE
  Pequeroku   $BASE/
  admin       $BASE/admin/
  API         $BASE/api/
  API docs    $BASE/api/schema/swagger-ui/ (once logged in)
  $ADMIN_LINE
  logs        $LOG_DIR/
  Ctrl-C stops everything.$HINT
$RULE
EOF

# Run until Ctrl-C, or until one of the three exits (then stop the others).
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
if [ "$stopping" = 0 ]; then
  say "a process exited (status $status); logs in $LOG_DIR"
  exit 1
fi
