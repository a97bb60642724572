"""FedLedger ether accounting: conservation, pull payments against hostile recipients."""

from __future__ import annotations

from eth_utils import function_signature_to_4byte_selector
from ledger_harness import MIN_STAKE, REWARD, TIMEOUT, WAD, Chain, Protocol, TaskConfig
from web3.contract import Contract

from incentives.reputation import PROBATION_ROUNDS

REENTER, REJECT = 0, 1


def held(chain: Chain, ledger: Contract, accounts: list[str]) -> int:
    """Wei the ledger owes: stakes + undistributed pools + pending and probation-held rewards of `accounts`."""
    f = ledger.functions
    stakes = sum(f.nodeInfo(a).call()[1] for a in accounts)
    pools = sum(f.taskInfo(t).call()[6] for t in range(1, f.taskCount().call() + 1))
    pending = sum(f.pendingRewards(a).call() + f.probationOf(a).call()[2] for a in accounts)
    return stakes + pools + pending


def test_ether_is_conserved_through_full_tasks_with_slashes(
    chain: Chain, ledger: Contract, proto: Protocol, nodes: list[str], owner: str
) -> None:
    # Prepare: two interleaved tasks by two owners, odd pools to force rounding dust
    owner2 = chain.accounts[5]
    everyone = [owner, owner2, *nodes]
    t1 = proto.create_task(owner, TaskConfig(rounds=3, committee_size=4), REWARD + 7)
    t2 = proto.create_task(owner2, TaskConfig(rounds=2, committee_size=2, proposer_share_bps=0), 10**15 + 3)
    f = ledger.functions

    def check() -> None:
        assert chain.balance(ledger.address) == held(chain, ledger, everyone)

    # Execute: honest rounds, a round with an unrevealed member (slashed), a rejected proposal
    proto.run_round(t1, [WAD, 7 * WAD // 10, WAD // 3, 0])
    check()
    members = proto.draw(t2)
    proto.commit(t2, members)
    proto.reveal(t2, members[:1])
    chain.travel(TIMEOUT + 1)
    chain.send(f.advance(t2), owner)  # slashes members[1]
    check()
    for _ in range(f.MAX_ATTEMPTS().call()):  # a lone revealed member has no voters: never accepted
        proto.propose(t2, [WAD])
        chain.travel(TIMEOUT + 1)
        chain.send(f.advance(t2), owner)  # undecided: no slash
        check()
    assert proto.round_of(t2) == 2  # round 1 void after MAX_ATTEMPTS
    members = proto.draw(t1)
    proto.commit(t1, members)
    proto.reveal(t1, members)
    n = len(members)  # the node slashed to zero stake is no longer eligible
    proto.propose(t1, [0] * n, cid=b"bafk-bad")
    proto.attest(t1, proto.voters(t1), agree=False)  # rejected, proposer slashed
    check()
    proto.propose(t1, [WAD // 2] * n)
    proto.attest(t1, proto.voters(t1))
    proto.finalize(t1, [WAD // 2] * n)
    check()
    proto.run_round(t2)
    proto.run_round(t1)
    check()

    # Assert: pools fully distributed; after everyone withdraws only stakes and held rewards remain
    assert [f.taskInfo(t).call()[6] for t in (t1, t2)] == [0, 0]
    paid = [a for a in everyone if f.pendingRewards(a).call()]
    assert set(paid) & set(nodes), "no node's probation vested"  # t1's three rounds end it
    for account in paid:
        chain.send(f.withdraw(), account)
        check()
    stakes = sum(f.nodeInfo(a).call()[1] for a in nodes)
    assert stakes == 4 * MIN_STAKE - 2 * MIN_STAKE
    still_held = sum(f.probationOf(a).call()[2] for a in nodes)  # nodes seated fewer than 3 times
    assert chain.balance(ledger.address) == stakes + still_held


def _hostile_recipient_with_reward(chain: Chain, ledger: Contract, mode: int) -> Contract:
    """Deploy a ReentrantWithdrawer owning a finished 1-round task nobody could serve, so the whole
    REWARD comes back to it as pending rewards."""
    attacker = chain.deploy("ReentrantWithdrawer", ledger.address)
    chain.send(attacker.functions.setMode(mode), chain.accounts[9])
    create = ledger.encode_abi("createTask", args=[TaskConfig(rounds=1).args()])
    chain.send(attacker.functions.forward(create), chain.accounts[9], REWARD)
    task_id = ledger.functions.taskCount().call()
    chain.send(ledger.functions.drawCommittee(task_id), chain.accounts[9])
    chain.travel(TIMEOUT + 1)
    chain.send(ledger.functions.advance(task_id), chain.accounts[9])  # nobody committed: void, refund
    assert ledger.functions.pendingRewards(attacker.address).call() == REWARD
    return attacker


def test_reentrant_withdraw_gets_nothing_extra(chain: Chain, ledger: Contract, nodes: list[str], task: int) -> None:
    # Prepare: the ledger also holds stakes and another pool the attacker would like to drain
    attacker = _hostile_recipient_with_reward(chain, ledger, REENTER)
    ledger_before = chain.balance(ledger.address)
    # Execute
    chain.send(attacker.functions.attack(False), chain.accounts[9])
    # Assert: paid exactly once; the re-entrant call was attempted and rejected as "nothing to withdraw"
    attempts, successes, last_revert = attacker.functions.reentryStats().call()
    assert (attempts, successes) == (1, 0)
    assert last_revert[:4] == function_signature_to_4byte_selector("FedLedgerNothingToWithdraw(address)")
    assert chain.balance(attacker.address) == REWARD
    assert chain.balance(ledger.address) == ledger_before - REWARD
    assert ledger.functions.pendingRewards(attacker.address).call() == 0


def test_reentrant_stake_withdrawal_gets_nothing_extra(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    # Prepare: the attacker registers as a node and unstakes
    attacker = chain.deploy("ReentrantWithdrawer", ledger.address)
    fwd = attacker.functions.forward
    chain.send(fwd(ledger.encode_abi("register", args=["evil", []])), chain.accounts[9], MIN_STAKE)
    chain.send(fwd(ledger.encode_abi("requestUnstake", args=[])), chain.accounts[9])
    chain.travel(2 * 86400 + 1)
    before = chain.balance(ledger.address)
    # Execute
    chain.send(attacker.functions.attack(True), chain.accounts[9])
    # Assert: the re-entrant withdrawStake found the node already deregistered
    attempts, successes, last_revert = attacker.functions.reentryStats().call()
    assert (attempts, successes) == (1, 0)
    assert last_revert[:4] == function_signature_to_4byte_selector("FedLedgerNotRegistered(address)")
    assert chain.balance(ledger.address) == before - MIN_STAKE


def test_rejecting_recipient_cannot_block_other_withdrawals(
    chain: Chain, ledger: Contract, proto: Protocol, nodes: list[str], owner: str
) -> None:
    # Prepare: the hostile contract and an honest node (past its probation) both have rewards pending
    attacker = _hostile_recipient_with_reward(chain, ledger, REJECT)
    task = proto.create_task(owner, TaskConfig(rounds=PROBATION_ROUNDS, committee_size=4))
    for _ in range(PROBATION_ROUNDS):
        order, _ = proto.run_round(task)
    honest = order[0]
    honest_pending = ledger.functions.pendingRewards(honest).call()
    assert honest_pending > 0
    # Execute / Assert: the hostile withdrawal reverts and keeps its credit ...
    with chain.reverts(ledger, "FedLedgerTransferFailed", attacker.address):
        attacker.functions.attack(False).transact({"from": chain.accounts[9]})
    assert ledger.functions.pendingRewards(attacker.address).call() == REWARD
    # ... and the honest node is paid regardless
    before = chain.balance(honest)
    receipt = chain.send(ledger.functions.withdraw(), honest)
    assert chain.balance(honest) == before + honest_pending - chain.fee(receipt)
    assert ledger.functions.pendingRewards(honest).call() == 0
