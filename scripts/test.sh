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
