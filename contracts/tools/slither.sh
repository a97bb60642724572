#!/usr/bin/env bash
# Slither on FedLedger, compiled by our pinned solc-js (contracts/tools/solc) with the artifact
# settings (viaIR, optimizer 200 runs, evmVersion cancun).
#
#   bash contracts/tools/slither.sh              # human-readable findings
#   bash contracts/tools/slither.sh --json -     # machine-readable, on stdout
#
# slither-analyzer pins web3 < 8 and this project pins web3 8.0.0, so it cannot live in the
# project's venv (or its `dev` extra): it gets its own venv, created on first use at
# $FEDLEDGER_SLITHER_VENV (default ~/.cache/fedledger/slither-venv). Accepted findings, and why,
# are in contracts/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
SLITHER_VERSION=0.11.6
VENV="${FEDLEDGER_SLITHER_VENV:-$HOME/.cache/fedledger/slither-venv}"
if [ ! -x "$VENV/bin/slither" ] || ! "$VENV/bin/slither" --version | grep -qx "$SLITHER_VERSION"; then
  python=".venv/bin/python"; [ -x "$python" ] || python="python3"
  "$python" -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q "slither-analyzer==$SLITHER_VERSION" >&2
fi
input="$(mktemp --suffix .json)"
trap 'rm -f "$input"' EXIT
cat > "$input" <<'JSON'
{"language": "Solidity",
 "sources": {"contracts/FedLedger.sol": {"urls": ["contracts/FedLedger.sol"]}},
 "settings": {"optimizer": {"enabled": true, "runs": 200}, "viaIR": true, "evmVersion": "cancun"}}
JSON
exec "$VENV/bin/slither" "$input" --solc contracts/tools/solc --compile-force-framework solc-json "$@"
