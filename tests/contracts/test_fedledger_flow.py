"""FedLedger happy paths, one external function at a time, and the protocol's timeout branches."""

from __future__ import annotations

from ledger_harness import (
    ATTEST, COMMIT, DRAW, FINALIZED, MIN_STAKE, MODEL_CID, PROPOSE, REVEAL, REWARD, SPEC_CID, TIMEOUT, VOID, WAD,
    Chain, Protocol, TaskConfig,
)  # fmt: skip
from web3.contract import Contract
from web3.logs import DISCARD

from incentives.reputation import LedgerState, TaskIncentives, apply_finalize

DAY = 86400


def _events(ledger: Contract, receipt, name: str) -> list:
    return list(getattr(ledger.events, name)().process_receipt(receipt, errors=DISCARD))


def test_constants(ledger: Contract) -> None:
    f = ledger.functions
    assert f.WAD().call() == WAD
    assert f.INITIAL_REPUTATION().call() == WAD // 2
    assert f.UNSTAKE_DELAY().call() == 2 * DAY
    assert f.MAX_COMMITTEE().call() == 64
    assert f.minStake().call() == MIN_STAKE
    assert f.taskCount().call() == 0 and f.activeNodeCount().call() == 0


# ---------------------------------------------------------------- nodes


def test_register_stores_peer_record_and_initial_reputation(chain: Chain, ledger: Contract) -> None:
    # Prepare
    node, stranger = chain.accounts[1], chain.accounts[7]
    addrs = ["/ip4/10.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1"]
    # Execute
    receipt = chain.send(ledger.functions.register("12D3KooWpeer", addrs), node, MIN_STAKE + 5)
    # Assert
    f = ledger.functions
    assert f.nodeInfo(node).call() == [True, MIN_STAKE + 5, "12D3KooWpeer", addrs]
    assert f.nodeStatus(node).call() == [True, 0, 0]
    assert f.reputationOf(node).call() == WAD // 2
    assert f.activeNodeCount().call() == 1
    assert f.nodeInfo(stranger).call() == [False, 0, "", []]
    (ev,) = _events(ledger, receipt, "NodeRegistered")
    assert ev["args"]["node"] == node and ev["args"]["multiaddrs"] == addrs


def test_update_peer_info_and_add_stake(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    f = ledger.functions
    receipt = chain.send(f.updatePeerInfo("12D3KooNew", ["/dns4/a.example/tcp/1"]), nodes[0])
    assert f.nodeInfo(nodes[0]).call()[2:] == ["12D3KooNew", ["/dns4/a.example/tcp/1"]]
    assert _events(ledger, receipt, "PeerInfoUpdated")[0]["args"]["peerId"] == "12D3KooNew"
    receipt = chain.send(f.addStake(), nodes[0], 7)
    assert f.nodeInfo(nodes[0]).call()[1] == MIN_STAKE + 7
    assert _events(ledger, receipt, "StakeAdded")[0]["args"]["stake"] == MIN_STAKE + 7


def test_unstake_leaves_the_active_set_then_pays_after_the_delay(
    chain: Chain, ledger: Contract, nodes: list[str]
) -> None:
    # Prepare
    f = ledger.functions
    leaving = nodes[1]
    # Execute
    chain.send(f.requestUnstake(), leaving)
    # Assert: out of the active set at once (swap-and-pop keeps the others), paid after the delay
    assert f.activeNodeCount().call() == 3
    assert f.nodeStatus(leaving).call()[0] is False
    chain.travel(2 * DAY + 1)
    before = chain.balance(leaving)
    receipt = chain.send(f.withdrawStake(), leaving)
    assert chain.balance(leaving) == before + MIN_STAKE - chain.fee(receipt)
    assert f.nodeInfo(leaving).call()[:2] == [False, 0]
    assert _events(ledger, receipt, "StakeWithdrawn")[0]["args"]["amount"] == MIN_STAKE
    # the others are still drawable, and the moved entry was re-indexed correctly
    chain.send(f.requestUnstake(), nodes[3])
    assert f.activeNodeCount().call() == 2


def test_reregistering_keeps_the_old_reputation(chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]) -> None:
    # Prepare: lower every member's reputation, then one leaves and comes back
    task = proto.create_task(owner, TaskConfig(rounds=1, committee_size=4))
    proto.run_round(task, [0, 0, 0, 0])
    node = nodes[0]
    rep = ledger.functions.reputationOf(node).call()
    assert rep < WAD // 2
    chain.send(ledger.functions.requestUnstake(), node)
    chain.travel(2 * DAY + 1)
    chain.send(ledger.functions.withdrawStake(), node)
    # Execute
    chain.send(ledger.functions.register("back", []), node, MIN_STAKE)
    # Assert: leaving and re-joining is no way to launder a bad reputation
    assert ledger.functions.reputationOf(node).call() == rep


# ---------------------------------------------------------------- tasks


def test_create_task_stores_every_parameter(chain: Chain, ledger: Contract, owner: str) -> None:
    # Prepare
    config = TaskConfig(rounds=5, committee_size=7, rule=2, max_samples=99, rule_params=b'{"trim":0.1}',
                        commit_timeout=11, reveal_timeout=12, propose_timeout=13, attest_timeout=14,
                        min_stake=3 * MIN_STAKE, reputation_threshold=WAD // 4, alpha=WAD // 10,
                        proposer_share_bps=100, attester_share_bps=200)  # fmt: skip
    # Execute
    receipt = chain.send(ledger.functions.createTask(config.args()), owner, REWARD)
    # Assert
    f = ledger.functions
    assert f.taskCount().call() == 1
    assert f.taskInfo(1).call() == [owner, 5, 7, 2, 99, 1, REWARD, SPEC_CID]
    assert f.taskParams(1).call() == [[11, 12, 13, 14], 3 * MIN_STAKE, WAD // 4, WAD // 10, 100, 200, b'{"trim":0.1}']
    assert f.globalModel(1).call() == [MODEL_CID, 0]
    (ev,) = _events(ledger, receipt, "TaskCreated")
    assert ev["args"]["taskId"] == 1 and ev["args"]["rewardPool"] == REWARD
    (phase,) = _events(ledger, receipt, "PhaseChanged")
    assert (phase["args"]["round"], phase["args"]["phase"]) == (1, DRAW)
    assert chain.balance(ledger.address) == REWARD


# ---------------------------------------------------------------- the round, step by step


def test_draw_seats_k_eligible_nodes_deterministically(chain: Chain, ledger: Contract, proto: Protocol, task: int) -> None:
    receipt = chain.send(ledger.functions.drawCommittee(task), chain.accounts[9])
    members = ledger.functions.committee(task, 1).call()
    assert len(members) == 3 and len(set(members)) == 3
    assert all(ledger.functions.memberInfo(task, 1, m).call()[0] for m in members)
    assert _events(ledger, receipt, "CommitteeDrawn")[0]["args"]["members"] == members
    st = proto.state(task)
    assert st["phase"] == COMMIT and st["committeeLen"] == 3 and st["deadline"] == chain.now() + TIMEOUT


def test_draw_skips_ineligible_nodes(chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]) -> None:
    # Prepare: one node unstakes, one has too little stake for this task; K asks for all four
    chain.send(ledger.functions.requestUnstake(), nodes[0])
    for node in nodes[2:]:
        chain.send(ledger.functions.addStake(), node, MIN_STAKE)
    task = proto.create_task(owner, TaskConfig(committee_size=4, min_stake=2 * MIN_STAKE))
    # Execute
    members = proto.draw(task)
    # Assert: only the two eligible nodes sit; a committee may be smaller than K
    assert sorted(members) == sorted(nodes[2:])


def test_draw_with_nobody_eligible_waits_without_voiding(chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]) -> None:
    # A void cost whoever drew a transaction every block (#14 H3); now the draw reverts and the
    # round waits in Draw with its pool.
    warmup = proto.create_task(owner, TaskConfig(rounds=1, committee_size=4))
    proto.run_round(warmup)  # scored once: no longer newcomers whom a draw seats whatever the threshold
    task = proto.create_task(owner, TaskConfig(rounds=1, reputation_threshold=WAD))
    with chain.reverts(ledger, "FedLedgerCommitteeTooSmall", 0, 1):
        ledger.functions.drawCommittee(task).transact({"from": owner})
    assert proto.state(task, 1)["phase"] == DRAW
    assert ledger.functions.taskInfo(task).call()[6] == REWARD


def test_draw_in_the_opening_block_is_refused(chain: Chain, ledger: Contract, nodes: list[str]) -> None:
    # Prepare: a contract that creates a task and draws in the same transaction
    batcher = chain.deploy("ReentrantWithdrawer", ledger.address)
    create = ledger.encode_abi("createTask", args=[TaskConfig().args()])
    draw = ledger.encode_abi("drawCommittee", args=[1])
    block = chain.w3.eth.block_number + 1
    # Execute / Assert
    with chain.reverts(ledger, "FedLedgerSeedNotReady", block):
        batcher.functions.batch([create, draw]).transact({"from": chain.accounts[9], "value": REWARD})


def test_stale_seed_block_reseeds(chain: Chain, ledger: Contract, proto: Protocol, task: int) -> None:
    chain.mine(257)
    receipt = chain.send(ledger.functions.drawCommittee(task), chain.accounts[0])
    assert _events(ledger, receipt, "CommitteeReseeded")[0]["args"]["seedBlock"] == receipt["blockNumber"]
    assert proto.state(task)["phase"] == DRAW
    assert len(proto.draw(task)) == 3


def test_commit_and_reveal_end_their_phases_early(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    proto.commit(task, committee[:2])
    assert proto.state(task)["phase"] == COMMIT
    proto.commit(task, committee[2:])
    assert proto.state(task)["phase"] == REVEAL and proto.state(task)["commitCount"] == 3
    assert ledger.functions.nodeStatus(committee[0]).call()[2] == 1  # exposure: slashable until revealed
    receipts = proto.reveal(task, committee[::-1])
    # reveal order is the canonical order; CIDs are in the events, their hashes in storage
    senders, samples, hashes, earned = ledger.functions.roundUpdates(task, 1).call()
    assert senders == committee[::-1] and samples == [100] * 3 and earned == [False] * 3  # nobody has scored yet
    ev = _events(ledger, receipts[0], "UpdateRevealed")[0]["args"]
    assert ev["index"] == 0 and ev["cid"] == proto.cid(committee[2], 1)
    from eth_utils import keccak

    assert hashes[0] == keccak(ev["cid"])
    st = proto.state(task)
    assert st["phase"] == PROPOSE and st["revealCount"] == 3
    assert ledger.functions.nodeStatus(committee[0]).call()[2] == 0


def test_an_honest_round_finalizes_with_rewards_the_mirror_predicts(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str, task: int, nodes: list[str]
) -> None:
    # Prepare
    f = ledger.functions
    accounts = [owner, *nodes]
    before = LedgerState({n: f.reputationOf(n).call() for n in nodes}, {}, REWARD, probation=dict.fromkeys(nodes, 0))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    order = proto.revealed(task)
    scores = [WAD, WAD // 2, WAD // 5]
    proposal = proto.propose(task, scores)
    proposer = proto.state(task)["proposer"]
    assert proposer == f.designatedProposer(task, 1).call() == members[0]  # the first drawn (attempt 0)
    assert _events(ledger, proposal, "ProposalSubmitted")[0]["args"]["scores"] == scores
    assert proto.state(task)["phase"] == ATTEST and proto.state(task)["voters"] == 2
    # Execute
    proto.attest(task, proto.voters(task))
    receipt = proto.finalize(task, scores, sender=chain.accounts[9])  # anyone may finalize
    # Assert
    expected = apply_finalize(before, owner=owner, rounds=2, round=1, senders=order, scores=scores,
                              proposer=proposer, agreeing=[m for m in order if m != proposer],
                              params=TaskIncentives())  # fmt: skip
    assert {n: f.reputationOf(n).call() for n in nodes} == expected.reputations
    assert {a: f.pendingRewards(a).call() for a in accounts} == {a: expected.pending.get(a, 0) for a in accounts}
    assert {n: f.probationOf(n).call() for n in nodes} == {
        n: [n in expected.probation, expected.probation.get(n, 0), expected.held.get(n, 0)] for n in nodes
    }
    assert f.taskInfo(task).call()[6] == expected.reward_remaining
    assert f.globalModel(task).call() == [b"bafk-global-1", 1]
    assert proto.state(task, 1)["phase"] == FINALIZED
    assert proto.state(task, 2)["phase"] == DRAW and f.taskInfo(task).call()[5] == 2
    assert _events(ledger, receipt, "RoundFinalized")[0]["args"]["cid"] == b"bafk-global-1"
    assert len(_events(ledger, receipt, "ReputationUpdated")) == 3


def test_last_round_empties_the_pool(chain: Chain, ledger: Contract, proto: Protocol, owner: str, task: int) -> None:
    proto.run_round(task)
    proto.run_round(task, [WAD, 0, 0])
    f = ledger.functions
    assert f.taskInfo(task).call()[6] == 0
    assert f.taskInfo(task).call()[5] == 3  # finished
    # every wei of the pool is credited to someone: trainers, proposers, attesters (held for the
    # newcomers' probation), the owner (dust)
    assert sum(proto.earned(a) for a in chain.accounts) == REWARD


# ---------------------------------------------------------------- timeouts, slashes, disputes


def test_unrevealed_members_are_slashed_into_the_pool(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    # Prepare: all commit, one never reveals
    proto.commit(task, committee)
    proto.reveal(task, committee[:2])
    # Execute: past the reveal deadline anyone applies the timeout
    chain.travel(TIMEOUT + 1)
    receipt = chain.send(ledger.functions.advance(task), chain.accounts[9])
    # Assert
    (ev,) = _events(ledger, receipt, "Slashed")
    assert ev["args"]["node"] == committee[2] and ev["args"]["amount"] == MIN_STAKE and ev["args"]["reason"] == 0
    assert ledger.functions.nodeInfo(committee[2]).call()[1] == 0
    assert ledger.functions.taskInfo(task).call()[6] == REWARD + MIN_STAKE
    assert proto.state(task)["phase"] == PROPOSE and proto.state(task)["revealCount"] == 2


def test_no_commitment_voids_the_round_and_keeps_the_pool(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    chain.travel(TIMEOUT + 1)
    receipt = chain.send(ledger.functions.advance(task), chain.accounts[9])
    assert _events(ledger, receipt, "RoundVoided")[0]["args"]["round"] == 1
    assert proto.state(task, 1)["phase"] == VOID and proto.state(task, 2)["phase"] == DRAW
    assert ledger.functions.taskInfo(task).call()[6] == REWARD
    assert ledger.functions.globalModel(task).call() == [MODEL_CID, 0]


def test_anyone_may_propose_after_the_timeout(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str], nodes: list[str]) -> None:
    proto.commit(task, committee)
    proto.reveal(task, committee)
    chain.travel(TIMEOUT + 1)
    outsider = next(n for n in nodes if n not in committee)
    proto.propose(task, [WAD] * 3, sender=outsider)
    st = proto.state(task)
    assert st["proposer"] == outsider and st["voters"] == 3 and st["deadline"] == chain.now() + TIMEOUT


def test_challenge_window_closing_in_silence_retries_without_slashing(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    # Silence is not consent (#14 C2): the window closes undecided, the proposer keeps its stake
    # and the next proposer gets its turn.
    proto.commit(task, committee)
    proto.reveal(task, committee)
    proto.propose(task, [WAD] * 3)
    proposer = proto.state(task)["proposer"]
    chain.travel(TIMEOUT + 1)
    receipt = chain.send(ledger.functions.advance(task), chain.accounts[9])
    assert _events(ledger, receipt, "ProposalUndecided")[0]["args"]["proposer"] == proposer
    assert not _events(ledger, receipt, "Slashed")
    st = proto.state(task)
    assert st["phase"] == PROPOSE and st["attempt"] == 1
    assert ledger.functions.nodeStatus(proposer).call()[2] == 0
    assert ledger.functions.stakeOf(proposer).call() == MIN_STAKE


def test_rejected_proposal_slashes_the_proposer_and_reopens_proposing(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str, nodes: list[str]
) -> None:
    # Prepare: four members, a bad proposal
    task = proto.create_task(owner, TaskConfig(committee_size=4))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    bad = proto.state(task)
    proto.propose(task, [0, 0, 0, WAD], cid=b"bafk-wrong")
    cheat = proto.state(task)["proposer"]
    assert ledger.functions.nodeStatus(cheat).call()[2] == 1
    voters = proto.voters(task)
    # Execute: all three voters disagree -> rejected on the spot at the third (two of the four
    # revealed members are only half: the proposer's seat counts on its side)
    proto.attest(task, voters[:2], agree=False)
    assert proto.state(task)["phase"] == ATTEST
    chain.send(ledger.functions.attest(task, 1, False), voters[2])
    # Assert
    st = proto.state(task)
    assert st["phase"] == PROPOSE and st["attempt"] == 1 and st["proposer"] == "0x" + "0" * 40
    assert ledger.functions.nodeInfo(cheat).call()[1] == 0
    assert ledger.functions.nodeStatus(cheat).call()[2] == 0
    assert ledger.functions.taskInfo(task).call()[6] == REWARD + MIN_STAKE
    nxt = ledger.functions.designatedProposer(task, 1).call()
    assert nxt != cheat
    # the next proposer's honest proposal goes through; the voter who had disagreed votes again
    proto.propose(task, [WAD] * 4)
    proto.attest(task, proto.voters(task))
    proto.finalize(task, [WAD] * 4)
    assert ledger.functions.globalModel(task).call() == [b"bafk-global-1", 1]
    assert bad["attempt"] == 0


def test_a_minority_disagreeing_does_not_slash_the_proposer(chain: Chain, ledger: Contract, proto: Protocol, task: int, committee: list[str]) -> None:
    # 1 of 2 voters disagrees, the other is silent: no strict majority either way (#14 C2)
    proto.commit(task, committee)
    proto.reveal(task, committee)
    proto.propose(task, [WAD] * 3)
    proposer = proto.state(task)["proposer"]
    proto.attest(task, proto.voters(task)[:1], agree=False)
    chain.travel(TIMEOUT + 1)
    receipt = chain.send(ledger.functions.advance(task), chain.accounts[9])
    assert _events(ledger, receipt, "ProposalUndecided")[0]["args"]["disagrees"] == 1
    assert not _events(ledger, receipt, "ProposalRejected")
    assert proto.state(task)["phase"] == PROPOSE
    assert ledger.functions.stakeOf(proposer).call() == MIN_STAKE
