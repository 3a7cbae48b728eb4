#!/usr/bin/env bash
# Creates .venv and installs the pinned requirements when they changed since the last
# install; installs the few system packages the project needs when they are missing.
# Safe to run again: a second run with nothing changed takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "setup: Python 3.11 is required (found $("$PYTHON" --version))" >&2; exit 1; }

apt_install() {
  # Debian packages: only when missing, only as root (otherwise say what to install).
  local missing=()
  for pair in "$@"; do
    local bin=${pair%%:*} pkg=${pair##*:}
    command -v "$bin" >/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install: ${missing[*]}" >&2
    return 1
  fi
}
apt_install redis-server:redis-server
if [ "${SETUP_BROWSER:-0}" = 1 ]; then
  apt_install chromium:chromium
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(cat constraints.txt requirements/*.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages (first run takes a few minutes)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt \
    -r requirements/web.txt -r requirements/worker.txt -r requirements/dev.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi
mkdir -p var/media var/models
