#!/usr/bin/env bash
# Set up everything FedLedger needs, on a fresh clone or again (idempotent).
#
#   bash scripts/setup.sh
#
# Creates .venv (Python 3.11) with the pinned CPU torch and the project in
# editable mode, and installs the pinned npm tools (solc-js,
# anvil, cast) with `npm ci`. A second run with nothing changed takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] || { echo "setup: Python 3.11 is needed (set PYTHON=...)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python"
  "$python" -m venv .venv
fi

stamp=.venv/.fedledger-setup
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! .venv/bin/python -c "import node, aggregation, incentives" 2>/dev/null; then
  echo "setup: installing Python dependencies (first time: about a minute)"
  # torch first and exactly pinned: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
  touch "$stamp"
fi

# npm ci again only when package-lock.json changed since the last install.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/anvil ] || [ "$(cat node_modules/.fedledger-lock 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: installing npm tools (solc, anvil, cast)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.fedledger-lock
fi
