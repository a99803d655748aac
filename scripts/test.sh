#!/usr/bin/env bash
# Set up (idempotent), lint (ruff, the project's config), and run every test: unit, HTTP and
# integration (real bentoml serve).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check gateway tests loadtest training service.py
.venv/bin/lint-imports  # the layout's import contracts (pyproject.toml)
exec .venv/bin/python -m pytest "$@"
