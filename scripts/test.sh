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
