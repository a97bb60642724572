"""FedLedger ether accounting: conservation, pull payments against hostile recipients."""

from __future__ import annotations

from ledger_harness import MIN_STAKE, MODEL_CID, REWARD, SPEC_CID, WAD, Chain
from eth_utils import function_signature_to_4byte_selector
from web3.contract import Contract

REENTER, REJECT = 0, 1


def _held(chain: Chain, ledger: Contract, accounts: list[str]) -> int:
    """Wei the ledger owes: stakes + undistributed pools + pending rewards of `accounts`."""
    f = ledger.functions
    stakes = sum(f.nodeInfo(a).call()[1] for a in accounts)
    pools = sum(f.taskInfo(t).call()[6] for t in range(1, f.taskCount().call() + 1))
    pending = sum(f.pendingRewards(a).call() for a in accounts)
    return stakes + pools + pending


def test_ether_is_conserved_through_full_tasks(
    chain: Chain, ledger: Contract, nodes: list[str], owner: str
) -> None:
    # Prepare: two interleaved tasks by two owners, an odd-sized pool to force rounding dust
    owner2 = chain.accounts[5]
    everyone = [owner, owner2, *nodes]
    f = ledger.functions
    chain.send(f.createTask(MODEL_CID, SPEC_CID, 3, 4, 0, 0), owner, REWARD + 7)
    chain.send(f.createTask(MODEL_CID, SPEC_CID, 2, 2, 1, 0), owner2, 10**15 + 3)
    scores_by_round = [[WAD, 7 * WAD // 10, WAD // 3, 0], [WAD // 2, WAD, 1, 12345], [0, 0, WAD, WAD // 7]]

    # Execute: run both tasks to the end, withdrawing along the way, checking after every step
    for rnd, scores in enumerate(scores_by_round, start=1):
        for node in nodes:
            chain.send(f.submitUpdate(1, rnd, f"t1-r{rnd}".encode(), 10), node)
        chain.send(f.finalizeRound(1, rnd, f"g1-{rnd}".encode(), scores), owner)
        assert chain.balance(ledger.address) == _held(chain, ledger, everyone)
        if rnd <= 2:
            for node in nodes[rnd - 1 : rnd + 1]:
                chain.send(f.submitUpdate(2, rnd, b"t2", 3), node)
            chain.send(f.finalizeRound(2, rnd, f"g2-{rnd}".encode(), scores[:2]), owner2)
            assert chain.balance(ledger.address) == _held(chain, ledger, everyone)
        if f.pendingRewards(nodes[0]).call():
            chain.send(f.withdraw(), nodes[0])
            assert chain.balance(ledger.address) == _held(chain, ledger, everyone)

    # Assert: pools fully distributed, only stakes and pending rewards remain
    assert [f.taskInfo(t).call()[6] for t in (1, 2)] == [0, 0]
    pending = sum(f.pendingRewards(a).call() for a in everyone)
    assert chain.balance(ledger.address) == 4 * MIN_STAKE + pending
    for account in everyone:
        if f.pendingRewards(account).call():
            chain.send(f.withdraw(), account)
    assert chain.balance(ledger.address) == 4 * MIN_STAKE


def _hostile_recipient_with_reward(chain: Chain, ledger: Contract, mode: int) -> Contract:
    """Deploy a ReentrantWithdrawer that owns a finished 1-round task, so REWARD is pending to it."""
    attacker = chain.deploy("ReentrantWithdrawer", ledger.address)
    chain.send(attacker.functions.setMode(mode), chain.accounts[9])
    create = ledger.encode_abi("createTask", args=[MODEL_CID, SPEC_CID, 1, 1, 0, 0])
    chain.send(attacker.functions.forward(create), chain.accounts[9], REWARD)
    task_id = ledger.functions.taskCount().call()
    finalize = ledger.encode_abi("finalizeRound", args=[task_id, 1, b"g", []])
    chain.send(attacker.functions.forward(finalize), chain.accounts[9])
    assert ledger.functions.pendingRewards(attacker.address).call() == REWARD
    return attacker


def test_reentrant_withdraw_gets_nothing_extra(
    chain: Chain, ledger: Contract, nodes: list[str], task: int
) -> None:
    # Prepare: the ledger also holds stakes and another pool the attacker would like to drain
    attacker = _hostile_recipient_with_reward(chain, ledger, REENTER)
    ledger_before = chain.balance(ledger.address)

    # Execute
    chain.send(attacker.functions.attack(), chain.accounts[9])

    # Assert: paid exactly once; the re-entrant call was attempted and rejected as "nothing to withdraw"
    attempts, successes, last_revert = attacker.functions.reentryStats().call()
    assert (attempts, successes) == (1, 0)
    assert last_revert[:4] == function_signature_to_4byte_selector("FedLedgerNothingToWithdraw(address)")
    assert chain.balance(attacker.address) == REWARD
    assert chain.balance(ledger.address) == ledger_before - REWARD
    assert ledger.functions.pendingRewards(attacker.address).call() == 0


def test_rejecting_recipient_cannot_block_other_withdrawals(
    chain: Chain, ledger: Contract, nodes: list[str], task: int, owner: str
) -> None:
    # Prepare: the hostile contract and an honest node both have rewards pending
    attacker = _hostile_recipient_with_reward(chain, ledger, REJECT)
    chain.send(ledger.functions.submitUpdate(task, 1, b"u", 1), nodes[0])
    chain.send(ledger.functions.finalizeRound(task, 1, b"g", [WAD]), owner)
    honest_pending = ledger.functions.pendingRewards(nodes[0]).call()
    assert honest_pending > 0

    # Execute / Assert: the hostile withdrawal reverts and keeps its credit ...
    with chain.reverts(ledger, "FedLedgerTransferFailed", attacker.address):
        attacker.functions.attack().transact({"from": chain.accounts[9]})
    assert ledger.functions.pendingRewards(attacker.address).call() == REWARD
    # ... and the honest node is paid regardless
    before = chain.balance(nodes[0])
    receipt = chain.send(ledger.functions.withdraw(), nodes[0])
    assert chain.balance(nodes[0]) == before + honest_pending - chain.fee(receipt)
    assert ledger.functions.pendingRewards(nodes[0]).call() == 0
