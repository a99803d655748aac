#!/usr/bin/env bash
# Set up (idempotent), lint (ruff, the project's config), build the docs (strict), and run every
# test: unit, HTTP and integration (real bentoml serve).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check gateway tests loadtest training service.py
.venv/bin/lint-imports  # the layout's import contracts (pyproject.toml)
# The docs site (mkdocs.yml, docs/): --strict fails on a broken link or anchor. Built outside
# the repo, then removed.
site_dir="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --site-dir "$site_dir"
rm -rf "$site_dir"
exec .venv/bin/python -m pytest "$@"
