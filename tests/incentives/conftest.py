"""Fixtures for checking the incentives mirror against the deployed FedLedger.

Run: .venv/bin/pytest tests/incentives
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_tester import EthereumTester, PyEVMBackend
from mirror_chain import RegisteredLedger
from web3 import EthereumTesterProvider, Web3

ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "artifacts" / "FedLedger.json"
MIN_STAKE = 10**16


@pytest.fixture(scope="module")
def registered_ledger() -> RegisteredLedger:
    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    artifact = json.loads(ARTIFACT.read_text())
    owner, *nodes = w3.eth.accounts[:5]
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(MIN_STAKE).transact({"from": owner}))
    ledger = w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    state = RegisteredLedger(tester, w3, ledger, owner, nodes, snapshot=0)
    for i, node in enumerate(nodes):
        state.transact(ledger.functions.register(f"peer{i}", []), node, MIN_STAKE)
    # Warm-up task: spread the reputations (about 0.88, 0.50, 0.196, 0.12) so examples start with
    # nodes on both sides of the 0.2 threshold, and leave some rewards pending.
    warmup_rounds = 4
    state.transact(ledger.functions.createTask(b"m", b"s", warmup_rounds, 4, 0, 0), owner, 10**18)
    for rnd in range(1, warmup_rounds + 1):
        for node in nodes:
            state.transact(ledger.functions.submitUpdate(1, rnd, b"u", 1), node)
        scores = [10**18, 10**18 // 2, 10**18 // 10, 0]
        state.transact(ledger.functions.finalizeRound(1, rnd, b"g", scores), owner)
    state.snapshot = tester.take_snapshot()
    return state
