#!/usr/bin/env bash
# Set up (idempotent) and run every test: unit, HTTP and integration (real bentoml serve).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
