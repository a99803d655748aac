#!/usr/bin/env bash
# Create .venv and install everything the gateway, its tests and its load tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Debian's redis-server for the shared-cache tests (Redis 7, no modules needed).
if ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
# Debian's HAProxy for the fleet test (tests/integration/test_fleet.py, deploy/selfhosted).
if ! command -v haproxy >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy >/dev/null
fi
# Debian's chromium for the dashboard's browser test (Playwright cannot download its own here).
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# Debian's tinyproxy: the CONNECT proxy the egress tests send upstream calls through.
if ! command -v tinyproxy >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tinyproxy >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Exactly the locked versions, hash-checked (scripts/lock.sh makes the locks); uv installs them,
# as it does in the Bento's image.
.venv/bin/python -m pip install --quiet "uv==$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements-dev.lock)"
.venv/bin/uv pip install --quiet --python .venv/bin/python --require-hashes -r requirements-dev.lock
