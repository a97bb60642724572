#!/usr/bin/env bash
# The stateful protocol test at full strength: 2,000 random sequences against FedLedger with every
# invariant checked after each step (CI runs 300 of them). About 15 minutes here.
#
#   bash scripts/stateful.sh            # 2,000 sequences
#   bash scripts/stateful.sh 5000       # more
set -euo pipefail
cd "$(dirname "$0")/.."
FEDLEDGER_STATEFUL_EXAMPLES="${1:-2000}" exec bash scripts/test.sh -m slow \
    tests/contracts/test_fedledger_stateful.py::test_protocol_state_machine_thorough
