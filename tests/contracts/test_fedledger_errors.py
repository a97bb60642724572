"""Every FedLedger custom error: provoke it and check the revert carries its selector and arguments."""

from __future__ import annotations

from ledger_harness import (
    ATTEST, MIN_STAKE, PROPOSE, REVEAL, COMMIT, DRAW, REWARD, TIMEOUT, WAD, Chain, Protocol, TaskConfig, commitment,
    salt_for,
)  # fmt: skip
from web3.contract import Contract

TESTED = {
    "FedLedgerCommitteeTooSmall",
    "FedLedgerBadAvailability",
    "FedLedgerInsufficientStake",
    "FedLedgerAlreadyRegistered",
    "FedLedgerNotRegistered",
    "FedLedgerUnstaking",
    "FedLedgerNoUnstakeRequested",
    "FedLedgerStakeLocked",
    "FedLedgerPendingSlash",
    "FedLedgerUnknownTask",
    "FedLedgerInvalidTask",
    "FedLedgerTaskFinished",
    "FedLedgerWrongRound",
    "FedLedgerWrongPhase",
    "FedLedgerPhaseExpired",
    "FedLedgerSeedNotReady",  # in test_fedledger_flow.py (needs two calls in one block)
    "FedLedgerNotCommitteeMember",
    "FedLedgerAlreadyCommitted",
    "FedLedgerNotCommitted",
    "FedLedgerAlreadyRevealed",
    "FedLedgerCommitmentMismatch",
    "FedLedgerZeroCommitment",
    "FedLedgerNotProposer",
    "FedLedgerIneligibleProposer",
    "FedLedgerScoresLength",
    "FedLedgerScoreOutOfRange",
    "FedLedgerNotAttester",
    "FedLedgerAlreadyAttested",
    "FedLedgerProposalMismatch",
    "FedLedgerNotDecided",
    "FedLedgerNothingToWithdraw",
    "FedLedgerTransferFailed",  # in test_fedledger_payments.py (needs a hostile recipient)
    "FedLedgerEmptyCid",
    "FedLedgerBadSamples",
}
STRANGER = 8  # accounts[8] never registers


def _to_propose(proto: Protocol, task: int, committee: list[str]) -> None:
    proto.commit(task, committee)
    proto.reveal(task, committee)


def test_every_custom_error_in_the_abi_has_a_test(ledger: Contract) -> None:
    # Prepare / Execute
    declared = {e["name"] for e in ledger.abi if e["type"] == "error"}
    # Assert: a new error without a test (or a stale name here) fails
    assert declared == TESTED


# ---------------------------------------------------------------- nodes


def test_insufficient_stake(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    node = chain.accounts[6]
    with chain.reverts(ledger, "FedLedgerInsufficientStake", MIN_STAKE - 1, MIN_STAKE):
        ledger.functions.register("p", []).transact({"from": node, "value": MIN_STAKE - 1})
    assert ledger.functions.reputationOf(node).call() == 0
    with chain.reverts(ledger, "FedLedgerInsufficientStake", 0, 1):
        ledger.functions.addStake().transact({"from": nodes[0], "value": 0})


def test_already_registered(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerAlreadyRegistered", nodes[0]):
        ledger.functions.register("again", []).transact({"from": nodes[0], "value": MIN_STAKE})


def test_not_registered(chain: Chain, ledger: Contract) -> None:
    stranger = chain.accounts[STRANGER]
    f = ledger.functions
    for call in (f.updatePeerInfo("p", []), f.addStake(), f.requestUnstake(), f.withdrawStake()):
        with chain.reverts(ledger, "FedLedgerNotRegistered", stranger):
            call.transact({"from": stranger, "value": 1 if call.fn_name == "addStake" else 0})


def test_unstaking_blocks_a_second_request_and_top_ups(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    chain.send(ledger.functions.requestUnstake(), nodes[0])
    unlocks = ledger.functions.nodeStatus(nodes[0]).call()[1]
    with chain.reverts(ledger, "FedLedgerUnstaking", nodes[0], unlocks):
        ledger.functions.requestUnstake().transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerUnstaking", nodes[0], unlocks):
        ledger.functions.addStake().transact({"from": nodes[0], "value": 1})


def test_no_unstake_requested_and_stake_locked(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerNoUnstakeRequested", nodes[0]):
        ledger.functions.withdrawStake().transact({"from": nodes[0]})
    chain.send(ledger.functions.requestUnstake(), nodes[0])
    unlocks = ledger.functions.nodeStatus(nodes[0]).call()[1]
    with chain.reverts(ledger, "FedLedgerStakeLocked", nodes[0], unlocks):
        ledger.functions.withdrawStake().transact({"from": nodes[0]})


def test_pending_slash_blocks_withdrawing_stake(
    chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]
) -> None:
    # Prepare: a member commits, asks to leave, and waits out the delay without revealing
    node = committee[0]
    proto.commit(task, [node])
    chain.send(ledger.functions.requestUnstake(), node)
    chain.travel(2 * 86400 + 1)
    # Execute / Assert: the open commitment keeps the stake in
    with chain.reverts(ledger, "FedLedgerPendingSlash", node, 1):
        ledger.functions.withdrawStake().transact({"from": node})
    # ... until the slash lands; then what is left can go
    chain.send(ledger.functions.advance(task), chain.accounts[0])
    assert ledger.functions.nodeInfo(node).call()[1] == 0
    assert ledger.functions.nodeStatus(node).call()[2] == 0


# ---------------------------------------------------------------- tasks


def test_unknown_task(chain: Chain, ledger: Contract, nodes: list[str], task: int) -> None:
    f = ledger.functions
    for call in (f.commit(2, 1, b"\x01" * 32), f.drawCommittee(2), f.advance(2)):
        with chain.reverts(ledger, "FedLedgerUnknownTask", 2):
            call.transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerUnknownTask", 0):
        f.taskInfo(0).call()
    with chain.reverts(ledger, "FedLedgerUnknownTask", 9):
        f.globalModel(9).call()


def test_invalid_task(chain: Chain, ledger: Contract, owner: str) -> None:
    base = TaskConfig()
    cases = [
        (base, 0, 0, 0),  # no reward pool
        (base.but(rounds=0), REWARD, 1, 0),
        (base.but(rounds=2**32 - 1), REWARD, 1, 2**32 - 1),
        (base.but(committee_size=0), REWARD, 2, 0),
        (base.but(committee_size=65), REWARD, 2, 65),
        (base.but(reveal_timeout=0), REWARD, 3, 0),
        (base.but(attest_timeout=30 * 86400 + 1), REWARD, 3, 30 * 86400 + 1),
        (base.but(reputation_threshold=WAD + 1), REWARD, 4, WAD + 1),
        (base.but(alpha=WAD + 1), REWARD, 5, WAD + 1),
        (base.but(proposer_share_bps=6000, attester_share_bps=4001), REWARD, 6, 10001),
        (base.but(min_committee=0), REWARD, 7, 0),
        (base.but(min_committee=4), REWARD, 7, 4),  # more than the committee size (3)
    ]
    for config, value, param, bad in cases:
        with chain.reverts(ledger, "FedLedgerInvalidTask", param, bad):
            ledger.functions.createTask(config.args()).transact({"from": owner, "value": value})
    assert ledger.functions.taskCount().call() == 0


def test_task_finished(chain: Chain, ledger: Contract, proto: Protocol, task: int) -> None:
    proto.run_round(task)
    proto.run_round(task)
    f = ledger.functions
    for call in (f.drawCommittee(task), f.advance(task), f.commit(task, 3, b"\x01" * 32)):
        with chain.reverts(ledger, "FedLedgerTaskFinished", task):
            call.transact({"from": chain.accounts[0]})


# ---------------------------------------------------------------- rounds


def test_wrong_round(chain: Chain, ledger: Contract, task: int, committee: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerWrongRound", task, 1, 2):
        ledger.functions.commit(task, 2, b"\x01" * 32).transact({"from": committee[0]})
    with chain.reverts(ledger, "FedLedgerWrongRound", task, 1, 0):
        ledger.functions.finalize(task, 0, b"g", []).transact({"from": committee[0]})


def test_wrong_phase(chain: Chain, ledger: Contract, proto: Protocol, task: int, nodes: list[str]) -> None:
    f = ledger.functions
    # before the draw: nothing but the draw
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, COMMIT, DRAW):
        f.commit(task, 1, b"\x01" * 32).transact({"from": nodes[0]})
    members = proto.draw(task)
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, DRAW, COMMIT):
        f.drawCommittee(task).transact({"from": nodes[0]})
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, REVEAL, COMMIT):
        f.reveal(task, 1, b"cid", 1, b"\x00" * 32).transact({"from": members[0]})
    proto.commit(task, members[:2])
    # a late commit: the deadline passed, so the round has moved on to Reveal
    chain.travel(TIMEOUT + 1)
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, COMMIT, REVEAL):
        f.commit(task, 1, b"\x01" * 32).transact({"from": members[2]})
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, PROPOSE, REVEAL):
        f.propose(task, 1, b"g", [], 0).transact({"from": members[0]})
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, ATTEST, REVEAL):
        f.finalize(task, 1, b"g", []).transact({"from": members[0]})


def test_void_round_reports_the_phase_it_became(chain: Chain, ledger: Contract, task: int, committee: list[str]) -> None:
    # Nobody commits; past the deadline the round is void and round 2 opens: a commit names round 1 still
    chain.travel(TIMEOUT + 1)
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, COMMIT, 6):
        ledger.functions.commit(task, 1, b"\x01" * 32).transact({"from": committee[0]})


def test_phase_expired(chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]) -> None:
    # An accepted proposal (2 of 3 agree) stays in Attest until finalized; a late vote is refused.
    task = proto.create_task(owner, TaskConfig(committee_size=4))
    _to_propose(proto, task, proto.draw(task))
    proto.propose(task, [WAD] * 4)
    voters = proto.voters(task)
    proto.attest(task, voters[:2])
    deadline = proto.state(task)["deadline"]
    chain.travel(TIMEOUT + 1)
    with chain.reverts(ledger, "FedLedgerPhaseExpired", task, 1, deadline):
        ledger.functions.attest(task, 1, True).transact({"from": voters[2]})


def test_not_committee_member(chain: Chain, ledger: Contract, task: int, committee: list[str], nodes: list[str]) -> None:
    outsider = next(n for n in nodes if n not in committee)
    with chain.reverts(ledger, "FedLedgerNotCommitteeMember", task, 1, outsider):
        ledger.functions.commit(task, 1, b"\x01" * 32).transact({"from": outsider})


def test_already_committed(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    proto.commit(task, committee[:1])
    with chain.reverts(ledger, "FedLedgerAlreadyCommitted", task, 1, committee[0]):
        ledger.functions.commit(task, 1, b"\x02" * 32).transact({"from": committee[0]})


def test_zero_commitment(chain: Chain, ledger: Contract, task: int, committee: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerZeroCommitment"):
        ledger.functions.commit(task, 1, b"\x00" * 32).transact({"from": committee[0]})


def test_not_committed(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    proto.commit(task, committee[:2])
    chain.travel(TIMEOUT + 1)
    with chain.reverts(ledger, "FedLedgerNotCommitted", task, 1, committee[2]):
        ledger.functions.reveal(task, 1, b"cid", 1, b"\x00" * 32).transact({"from": committee[2]})


def test_already_revealed(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    proto.commit(task, committee)
    proto.reveal(task, committee[:1])
    with chain.reverts(ledger, "FedLedgerAlreadyRevealed", task, 1, committee[0]):
        ledger.functions.reveal(task, 1, b"cid", 1, b"\x00" * 32).transact({"from": committee[0]})


def test_commitment_mismatch(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    # Prepare: a member commits; another member tries to reveal a copy of it (the sender is bound)
    node = committee[0]
    proto.commit(task, committee)
    committed = commitment(proto.cid(node, 1), 100, salt_for(node, 1), node)
    wrong = commitment(proto.cid(node, 1), 101, salt_for(node, 1), node)
    # Execute / Assert
    with chain.reverts(ledger, "FedLedgerCommitmentMismatch", node, committed, wrong):
        ledger.functions.reveal(task, 1, proto.cid(node, 1), 101, salt_for(node, 1)).transact({"from": node})
    thief = committee[1]
    copied = commitment(proto.cid(node, 1), 100, salt_for(node, 1), thief)
    own = commitment(proto.cid(thief, 1), 100, salt_for(thief, 1), thief)
    with chain.reverts(ledger, "FedLedgerCommitmentMismatch", thief, own, copied):
        ledger.functions.reveal(task, 1, proto.cid(node, 1), 100, salt_for(node, 1)).transact({"from": thief})


def test_empty_cid(chain: Chain, ledger: Contract, proto: Protocol, owner: str, task: int, committee: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerEmptyCid"):
        ledger.functions.createTask(TaskConfig(model_cid=b"").args()).transact({"from": owner, "value": 1})
    proto.commit(task, committee)
    with chain.reverts(ledger, "FedLedgerEmptyCid"):
        ledger.functions.reveal(task, 1, b"", 1, b"\x00" * 32).transact({"from": committee[0]})
    proto.reveal(task, committee)
    designated = ledger.functions.designatedProposer(task, 1).call()
    with chain.reverts(ledger, "FedLedgerEmptyCid"):
        ledger.functions.propose(task, 1, b"", [WAD] * 3, 7).transact({"from": designated})


def test_bad_samples(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    proto.commit(task, committee)
    for bad in (0, 2**96):
        with chain.reverts(ledger, "FedLedgerBadSamples", bad):
            ledger.functions.reveal(task, 1, b"cid", bad, b"\x00" * 32).transact({"from": committee[0]})


def test_not_proposer_before_the_timeout(
    chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]
) -> None:
    _to_propose(proto, task, committee)
    designated = ledger.functions.designatedProposer(task, 1).call()
    other = next(m for m in committee if m != designated)
    deadline = proto.state(task)["deadline"]
    with chain.reverts(ledger, "FedLedgerNotProposer", other, designated, deadline):
        ledger.functions.propose(task, 1, b"g", [WAD] * 3, 7).transact({"from": other})


def test_ineligible_fallback_proposer(chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]) -> None:
    # Prepare: a task that wants 2x the minimum stake; one node tops up, the others cannot sit on it
    chain.send(ledger.functions.addStake(), nodes[0], MIN_STAKE)
    task = proto.create_task(owner, TaskConfig(committee_size=2, min_stake=2 * MIN_STAKE))  # 4 <= 2K: a full scan
    members = proto.draw(task)
    assert members == [nodes[0]]
    _to_propose(proto, task, members)
    chain.travel(TIMEOUT + 1)
    # Execute / Assert: after the timeout a poorly staked node, or a stranger, still may not propose
    with chain.reverts(ledger, "FedLedgerIneligibleProposer", nodes[1], MIN_STAKE, 2 * MIN_STAKE):
        ledger.functions.propose(task, 1, b"g", [WAD], 1).transact({"from": nodes[1]})
    stranger = chain.accounts[STRANGER]
    with chain.reverts(ledger, "FedLedgerNotRegistered", stranger):
        ledger.functions.propose(task, 1, b"g", [WAD], 1).transact({"from": stranger})


def test_scores_length_and_range(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    _to_propose(proto, task, committee)
    designated = ledger.functions.designatedProposer(task, 1).call()
    with chain.reverts(ledger, "FedLedgerScoresLength", 3, 2):
        ledger.functions.propose(task, 1, b"g", [WAD, WAD], 3).transact({"from": designated})
    with chain.reverts(ledger, "FedLedgerScoreOutOfRange", 1, WAD + 1):
        ledger.functions.propose(task, 1, b"g", [WAD, WAD + 1, 0], 7).transact({"from": designated})
    # the availability bitmap names only revealed updates (bit 3 of 3 reveals is out)
    with chain.reverts(ledger, "FedLedgerBadAvailability", 0b1111, 3):
        ledger.functions.propose(task, 1, b"g", [WAD] * 3, 0b1111).transact({"from": designated})


def test_not_attester_and_already_attested(
    chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str], nodes: list[str]
) -> None:
    _to_propose(proto, task, committee)
    proto.propose(task, [WAD] * 3)
    proposer = proto.state(task)["proposer"]
    outsider = next(n for n in nodes if n not in committee)
    for who in (proposer, outsider):
        with chain.reverts(ledger, "FedLedgerNotAttester", task, 1, who):
            ledger.functions.attest(task, 1, True).transact({"from": who})
    voter = proto.voters(task)[0]
    proto.attest(task, [voter])
    with chain.reverts(ledger, "FedLedgerAlreadyAttested", voter, 0):
        ledger.functions.attest(task, 1, False).transact({"from": voter})


def test_proposal_mismatch_and_not_decided(
    chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]
) -> None:
    _to_propose(proto, task, committee)
    proto.propose(task, [WAD] * 3)
    st = proto.state(task)
    from eth_abi import encode
    from eth_utils import keccak

    wrong = keccak(encode(["bytes", "uint256[]"], [b"bafk-global-1", [WAD, WAD, 0]]))
    with chain.reverts(ledger, "FedLedgerProposalMismatch", st["proposalHash"], wrong):
        ledger.functions.finalize(task, 1, b"bafk-global-1", [WAD, WAD, 0]).transact({"from": committee[0]})
    # one of two voters agrees: no majority yet, the other may still dispute
    proto.attest(task, proto.voters(task)[:1])
    with chain.reverts(ledger, "FedLedgerNotDecided", task, 1, 1, 2, st["deadline"]):
        ledger.functions.finalize(task, 1, b"bafk-global-1", [WAD] * 3).transact({"from": committee[0]})


def test_nothing_to_withdraw(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    with chain.reverts(ledger, "FedLedgerNothingToWithdraw", nodes[0]):
        ledger.functions.withdraw().transact({"from": nodes[0]})


def test_committee_too_small(chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]) -> None:
    # 4 registered nodes, a task that needs 5 of them: the draw is refused and the round waits
    task = proto.create_task(owner, TaskConfig(committee_size=5, min_committee=5))
    with chain.reverts(ledger, "FedLedgerCommitteeTooSmall", 4, 5):
        ledger.functions.drawCommittee(task).transact({"from": owner})
    assert proto.state(task, 1)["phase"] == DRAW
