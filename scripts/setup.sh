#!/usr/bin/env bash
# Installs what Pequeroku needs on this machine: Debian packages for the local node (QEMU,
# the guest kernel, debootstrap) and the Python environment in .venv. Idempotent and quiet
# when everything is already there.
#
#   scripts/setup.sh            system packages + .venv with dev tools
#   scripts/setup.sh --no-apt   only the Python environment
#
# apt's and pip's own output (warnings, build banners) goes to PEQUEROKU_SETUP_LOG
# (.local/logs/setup.log); on failure the last lines are shown with the log's path.
set -euo pipefail

cd "$(dirname "$0")/.."

LOG=${PEQUEROKU_SETUP_LOG:-$PWD/.local/logs/setup.log}
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

logged() {  # what, command...: run with output to $LOG; on failure say so and exit 1
  local what=$1
  shift
  echo "### $what: $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "setup: $what failed; full output in $LOG, last lines:" >&2
    tail -n 15 "$LOG" | sed 's/^/  | /' >&2
    exit 1
  fi
}

APT_PACKAGES=(qemu-system-x86 qemu-utils linux-image-amd64 busybox-static debootstrap e2fsprogs openssh-client nftables shellcheck nginx-light gcc libc6-dev)
want_apt=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) want_apt=0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ "$want_apt" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    logged "apt-get update" "${sudo_cmd[@]}" apt-get update -qq
    logged "apt-get install" "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq "${missing[@]}"
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  logged "creating .venv" "$PYTHON" -m venv .venv
  logged "upgrading pip" .venv/bin/python -m pip install -q --upgrade pip
fi

# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.pyproject.sha256
sum=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  echo "setup: installing Python dependencies"
  logged "pip install" .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$sum" > "$stamp"
fi
