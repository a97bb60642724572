"""The embedded chain's direct view calls answer exactly what web3's eth_call answers."""

from __future__ import annotations

import pytest
from web3.exceptions import ContractLogicError

from node.chain import deploy_fedledger, dev_account
from node.chain.sends import EMBEDDED_GAS_LIMIT
from node.chain.types import make_commitment
from node.chain.embedded_calls import EmbeddedCaller
from node.chain.providers import embedded_web3
from node.errors import ChainError
from node.taskspec import TaskParams

STAKE = 10**18


@pytest.fixture(scope="module")
def federation():
    """A task in its reveal phase: two registered nodes, both committed, one revealed."""
    w3 = embedded_web3(num_accounts=4)
    owner = dev_account(0)
    chain, _ = deploy_fedledger(w3, owner, STAKE)
    nodes = [chain.as_account(dev_account(i)) for i in (1, 2)]
    for i, node in enumerate(nodes):  # before the task: a round draws from the nodes active when it opened
        node.register(f"peer{i}", [f"/ip4/127.0.0.1/tcp/{4000 + i}"], STAKE)
    task, _ = chain.create_task("bafk-initial", "bafk-spec", TaskParams(rounds=2, committee_size=2, rule="fedavg"), 5 * STAKE)
    chain.draw_committee(task)
    for i, node in enumerate(nodes):
        node.commit(task, 1, make_commitment(f"bafk-{i}", 10 + i, bytes([i + 1]) * 32, node.account.address))
    nodes[0].reveal(task, 1, "bafk-0", 10, b"\x01" * 32)
    return w3, chain, task, nodes


def test_every_view_matches_web3(federation):
    w3, chain, task, nodes = federation
    caller = EmbeddedCaller(w3, EMBEDDED_GAS_LIMIT)
    f = chain.contract.functions
    a, b = (n.account.address for n in nodes)
    calls = [
        f.reputationOf(a), f.pendingRewards(a), f.globalModel(task), f.taskCount(), f.taskInfo(task),
        f.roundState(task, 1), f.committee(task, 1), f.roundUpdates(task, 1), f.nodeInfo(b), f.minStake(),
    ]  # fmt: skip
    for fn in calls:
        assert caller.call(fn) == fn.call(), fn.fn_name
    assert caller.call(f.committee(task, 1)) and all(m in (a, b) for m in caller.call(f.committee(task, 1)))


def test_a_revert_carries_the_custom_error(federation):
    w3, chain, task, nodes = federation
    caller = EmbeddedCaller(w3, EMBEDDED_GAS_LIMIT)
    with pytest.raises(ContractLogicError) as info:
        caller.call(chain.contract.functions.withdraw(), nodes[0].account.address, pending=True)
    assert info.value.data.startswith("0x") and len(info.value.data) > 10
    # ...which the client turns into the named error, before anything is sent
    nonce = w3.eth.get_transaction_count(nodes[0].account.address)
    with pytest.raises(ChainError, match=r"FedLedgerNothingToWithdraw\(0x"):
        nodes[0].withdraw()
    assert w3.eth.get_transaction_count(nodes[0].account.address) == nonce


def test_a_new_block_is_seen_at_once(federation):
    w3, chain, task, nodes = federation
    before = chain.round_state(task, 1).reveal_count
    nodes[1].reveal(task, 1, "bafk-1", 11, b"\x02" * 32)
    assert chain.round_state(task, 1).reveal_count == before + 1
