"""Fixtures for FedLedger contract tests: a fresh in-process EVM per test, deployed from the artifact.

Run: .venv/bin/pytest tests/contracts
"""

from __future__ import annotations

import pytest
from ledger_harness import MIN_STAKE, Chain, Protocol, TaskConfig
from web3.contract import Contract


@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def ledger(chain: Chain) -> Contract:
    """A FedLedger with MIN_STAKE, deployed by accounts[0]."""
    return chain.deploy("FedLedger", MIN_STAKE)


@pytest.fixture
def proto(chain: Chain, ledger: Contract) -> Protocol:
    return Protocol(chain, ledger)


@pytest.fixture
def owner(chain: Chain) -> str:
    """The default task owner (not a registered node)."""
    return chain.accounts[0]


@pytest.fixture
def nodes(chain: Chain, proto: Protocol) -> list[str]:
    """accounts[1..4], registered with MIN_STAKE."""
    registered = chain.accounts[1:5]
    proto.register(registered)
    return registered


@pytest.fixture
def task(proto: Protocol, nodes: list[str], owner: str) -> int:
    """Task 1: 2 rounds, committee of 3, REWARD pool, 600 s phases (see TaskConfig defaults)."""
    return proto.create_task(owner, TaskConfig())


@pytest.fixture
def committee(proto: Protocol, task: int) -> list[str]:
    """Round 1's committee of task 1, drawn."""
    return proto.draw(task)
