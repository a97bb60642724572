"""Fixtures for FedLedger contract tests: a fresh in-process EVM per test, deployed from the artifact.

Run: .venv/bin/pytest tests/contracts
"""

from __future__ import annotations

import pytest
from ledger_harness import MIN_STAKE, MODEL_CID, REWARD, SPEC_CID, Chain
from web3.contract import Contract


@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def ledger(chain: Chain) -> Contract:
    """A FedLedger with MIN_STAKE, deployed by accounts[0]."""
    return chain.deploy("FedLedger", MIN_STAKE)


@pytest.fixture
def owner(chain: Chain) -> str:
    """The default task owner (not a registered node)."""
    return chain.accounts[0]


@pytest.fixture
def nodes(chain: Chain, ledger: Contract) -> list[str]:
    """accounts[1..4], registered with MIN_STAKE."""
    registered = chain.accounts[1:5]
    for i, node in enumerate(registered):
        chain.send(
            ledger.functions.register(f"12D3KooNode{i}", [f"/ip4/127.0.0.1/tcp/{4000 + i}"]),
            node,
            MIN_STAKE,
        )
    return registered


@pytest.fixture
def task(chain: Chain, ledger: Contract, owner: str) -> int:
    """Task 1: 2 rounds, committee of 3, rule 0, maxSamples 1000, REWARD pool."""
    chain.send(ledger.functions.createTask(MODEL_CID, SPEC_CID, 2, 3, 0, 1000), owner, REWARD)
    return 1
