#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.  Safe to run again: each step is
# skipped when already done.  Used by CI (.ci/run) and given in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${OPPORTUNE_VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# llama-cpp-python compiles from source the first time (about 9 minutes on 2 cores); pip keeps the wheel in
# its cache, so later installs on the same machine take seconds.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
"$VENV/bin/python" -m pip install --quiet -e '.[test]'

# Headless Chromium renders the dashboard in its tests (Debian's package; root installs it).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the dashboard browser tests will be skipped" >&2
  else
    echo "warning: chromium not found; the dashboard browser tests will be skipped" >&2
  fi
fi

# The embedded model is assembled once into the user cache (with its sha256 checked).
"$VENV/bin/opportune" model >/dev/null

exec "$VENV/bin/python" -m pytest "$@"
