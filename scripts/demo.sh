#!/usr/bin/env bash
# Set up (idempotent) and run the demo: fake provider + gateway + a few real requests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m loadtest.demo
