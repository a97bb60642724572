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
    # Warm-up: the first two nodes serve a task alone until their probation is over (one vests,
    # one forfeits); then the other two join and serve one round, so examples start with nodes on
    # both sides of the 0.2 threshold, rewards pending for the first two and held for the
    # newcomers, who are still on probation (one round scored of PROBATION_ROUNDS).
    proto.register(nodes[:2])
    veterans = proto.create_task(owner, TaskConfig(rounds=4, committee_size=2, min_committee=2, reputation_threshold=0))
    for _ in range(4):
        proto.run_round(veterans, [WAD, WAD // 10])
    proto.register(nodes[2:])
    task = proto.create_task(owner, TaskConfig(rounds=1, committee_size=4, reputation_threshold=0))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    by_node = {nodes[0]: WAD // 10, nodes[1]: 0, nodes[2]: WAD, nodes[3]: WAD // 2}
    scores = [by_node[n] for n in proto.revealed(task)]
    proto.propose(task, scores)
    proto.attest(task, proto.voters(task))
    proto.finalize(task, scores)
    return RegisteredLedger(chain, proto, owner, nodes, snapshot=chain.tester.take_snapshot())
