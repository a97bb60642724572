"""Views over RPC sent raw (node/chain/views.py) give what web3 gives, and the read cache keeps
a loop iteration's views until this client sends, never past its scope."""

from __future__ import annotations

import pytest
from web3 import Web3

from node.chain import FedLedgerClient, Phase, deploy_fedledger, dev_account
from node.chain.anvil import Anvil
from node.chain.types import make_commitment
from node.taskspec import TaskParams

STAKE = 10**18


@pytest.fixture(scope="module")
def rpc_task():
    """Anvil with two registered nodes on task 1's drawn committee (round 1 in its commit phase)."""
    with Anvil(accounts=4) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        owner, _ = deploy_fedledger(w3, dev_account(0), STAKE)
        nodes = [owner.as_account(dev_account(i)) for i in (1, 2)]
        for i, node in enumerate(nodes):
            node.register(f"peer{i}", [f"/ip4/127.0.0.1/tcp/{4000 + i}"], STAKE)
        task, _ = owner.create_task("bafk-initial", "bafk-spec", TaskParams(rounds=2, committee_size=2, rule="fedavg"), STAKE)
        w3.provider.make_request("evm_mine", [])  # the draw needs a block after its seed block
        members, _ = nodes[0].draw_committee(task)
        assert len(members) == 2
        yield {"w3": w3, "owner": owner, "nodes": nodes, "task": task}


def test_raw_views_equal_web3s(rpc_task):
    # Prepare
    owner, nodes, task = rpc_task["owner"], rpc_task["nodes"], rpc_task["task"]
    functions = owner.contract.functions
    me = nodes[0].account.address

    # Execute / Assert: the same values, addresses checksummed, as web3's own call returns
    assert owner._view("taskInfo", task) == functions.taskInfo(task).call()
    assert owner._view("roundState", task, 1) == functions.roundState(task, 1).call()
    assert owner._view("committee", task, 1) == functions.committee(task, 1).call()
    assert owner._view("nodeInfo", me) == functions.nodeInfo(me).call()
    assert owner._view("memberInfo", task, 1, me) == functions.memberInfo(task, 1, me).call()
    assert owner.round_state(task, 1).phase == Phase.COMMIT
    assert owner.min_stake() == STAKE
    assert owner._rpc_views.calldata("memberInfo", (task, 1, me)) == functions.memberInfo(task, 1, me)._encode_transaction_data()


def test_read_cache_holds_within_a_scope_until_a_send(rpc_task):
    # Prepare: a second client on the same chain, as another process would be
    w3, task = rpc_task["w3"], rpc_task["task"]
    node = rpc_task["nodes"][1]
    other = FedLedgerClient(w3, node.address, dev_account(1))
    me = node.account.address
    assert node.member_info(task, 1, me).commitment == b"\x00" * 32

    theirs = other.account.address
    with node.cached_reads():
        before = node.member_info(task, 1, theirs)
        # Execute: another client commits, then this client commits
        other.commit(task, 1, make_commitment("bafk-a", 10, b"\x01" * 32, theirs))
        kept = node.member_info(task, 1, theirs)
        node.commit(task, 1, make_commitment("bafk-b", 11, b"\x02" * 32, me))
        after_send = node.member_info(task, 1, theirs)
        mine = node.member_info(task, 1, me)
    outside = node.member_info(task, 1, theirs)

    # Assert: another's write is unseen inside the scope until our own send drops the cache
    assert before.commitment == kept.commitment == b"\x00" * 32
    assert after_send.commitment == outside.commitment == make_commitment("bafk-a", 10, b"\x01" * 32, theirs)
    assert mine.commitment == make_commitment("bafk-b", 11, b"\x02" * 32, me)


def test_a_view_that_reverts_raises_web3s_error(rpc_task):
    from web3.exceptions import ContractLogicError

    # Execute / Assert: a task that does not exist (or a typed revert's data, whichever the contract gives)
    owner = rpc_task["owner"]
    try:
        expected = owner.contract.functions.roundState(999, 1).call()
    except ContractLogicError:
        with pytest.raises(ContractLogicError):
            owner._view("roundState", 999, 1)
    else:
        assert owner._view("roundState", 999, 1) == expected
