#!/usr/bin/env bash
# Re-lock every dependency, then run the tests: the one upgrade command.
#   scripts/lock.sh                 re-resolve after a change to requirements*.txt, keeping every
#                                   version already locked that still fits (the same inputs give
#                                   the same locks)
#   scripts/lock.sh --upgrade       move everything to the newest versions the ranges allow
#   scripts/lock.sh --upgrade-package httpx   move one package (any other `uv pip compile` flag
#                                   passes through too)
#   scripts/lock.sh --no-test ...   lock only
# requirements-dev.lock (tests, tools, the semantic extra) is resolved first; the runtime lock
# (requirements.lock, what the Bento installs) and the semantic one take their versions from it,
# so the tests run exactly what ships. Exact versions and sha256 hashes, for CPython 3.11 on
# x86-64 Linux (the Bento's image), from the default index (PyPI, or UV_INDEX_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_TESTS=1
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--no-test" ]; then RUN_TESTS=0; else ARGS+=("$arg"); fi
done
if [ -x .venv/bin/uv ]; then UV=.venv/bin/uv; else UV=uv; fi
compile() {
  "$UV" pip compile --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu --custom-compile-command "scripts/lock.sh" \
    "${ARGS[@]}" "$@"
}
compile requirements-dev.txt -o requirements-dev.lock
compile requirements.txt -c requirements-dev.lock -o requirements.lock
compile requirements-semantic.txt -c requirements-dev.lock -o requirements-semantic.lock
if [ "$RUN_TESTS" = 1 ]; then
  exec bash scripts/test.sh  # installs the new locks (scripts/setup.sh), then every test
fi
