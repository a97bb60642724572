"""Fixtures for checking the incentives mirror against the deployed FedLedger.

Run: .venv/bin/pytest tests/incentives
"""

from __future__ import annotations

import pytest
from mirror_chain import RegisteredLedger

from tests.contracts.ledger_harness import MIN_STAKE, WAD, Chain, Protocol, TaskConfig


@pytest.fixture(scope="module")
def registered_ledger() -> RegisteredLedger:
    chain = Chain()
    ledger = chain.deploy("FedLedger", MIN_STAKE)
    owner, *nodes = chain.accounts[:5]
    proto = Protocol(chain, ledger)
    proto.register(nodes)
    # Warm-up task: spread the reputations (node order is the draw order, which with 4 nodes
    # and K = 4 is a rotation of the registration order) so examples start with nodes on both
    # sides of the 0.2 threshold, and leave some rewards pending.
    warmup_rounds = 4
    task = proto.create_task(owner, TaskConfig(rounds=warmup_rounds, committee_size=4, reputation_threshold=0))
    for _ in range(warmup_rounds):
        proto.run_round(task, [WAD, WAD // 2, WAD // 10, 0])
    return RegisteredLedger(chain, proto, owner, nodes, snapshot=chain.tester.take_snapshot())
