"""Exploits against FedLedger's round outcomes (issue #14), each kept as a regression test.

Every test here was first run against the contract it guards and failed there: it is the attack,
written down. Run: .venv/bin/python -m pytest -q tests/contracts/test_fedledger_adversarial.py
"""

from __future__ import annotations

import pytest
from ledger_harness import ATTEST, MIN_STAKE, PROPOSE, TIMEOUT, VOID, WAD, Chain, Protocol, TaskConfig
from web3.contract import Contract
from web3.logs import DISCARD

POISONED = b"bafk-poisoned-model"


def _events(ledger: Contract, receipt, name: str) -> list:
    return list(getattr(ledger.events, name)().process_receipt(receipt, errors=DISCARD))


def _stakes(ledger: Contract, accounts: list[str]) -> list[int]:
    return [ledger.functions.stakeOf(a).call() for a in accounts]


def _revealed_round(proto: Protocol, owner: str, k: int) -> tuple[int, list[str]]:
    """A task with committee K whose round 1 has every drawn member revealed; (task, reveal order)."""
    task = proto.create_task(owner, TaskConfig(committee_size=k))
    members = proto.draw(task)
    assert len(members) == k
    proto.commit(task, members)
    proto.reveal(task, members)
    return task, proto.revealed(task)


def test_a_tie_with_an_outside_proposer_does_not_finalize(chain: Chain, ledger: Contract, proto: Protocol, owner: str) -> None:
    # Prepare: 4 revealed; an outsider (staked, not on the committee) proposes after the timeout;
    # 2 colluding members agree, the 2 honest ones disagree.
    proto.register(chain.accounts[1:5])
    task, order = _revealed_round(proto, owner, 4)
    outsider = chain.accounts[6]
    proto.register([outsider])
    chain.travel(TIMEOUT + 1)
    scores = [WAD] * 4
    proto.propose(task, scores, cid=POISONED, sender=outsider)
    colluders, honest = order[:2], order[2:]
    proto.attest(task, colluders, agree=True)
    proto.attest(task, honest, agree=False)
    # Execute / Assert: 2 of 4 is no majority, and with every vote in nothing can change: the
    # attempt ends at once, undecided; nothing is finalized and nobody is slashed
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, ATTEST, PROPOSE):
        proto.finalize(task, scores, cid=POISONED)
    assert ledger.functions.globalModel(task).call()[1] == 0
    assert _stakes(ledger, [*order, outsider]) == [MIN_STAKE] * 5
    assert proto.state(task)["attempt"] == 1


def test_silence_is_not_consent(chain: Chain, ledger: Contract, proto: Protocol, owner: str) -> None:
    # Prepare: 5 revealed, the designated proposer posts a poisoned model, 1 colluder agrees and
    # the 3 others say nothing until the window closes.
    proto.register(chain.accounts[1:6])
    task, order = _revealed_round(proto, owner, 5)
    scores = [WAD] * 5
    proto.propose(task, scores, cid=POISONED)
    voters = proto.voters(task)
    proto.attest(task, voters[:1], agree=True)
    chain.travel(TIMEOUT + 1)
    # Execute / Assert
    with chain.reverts(ledger, "FedLedgerWrongPhase", task, 1, ATTEST, PROPOSE):
        proto.finalize(task, scores, cid=POISONED)
    assert ledger.functions.globalModel(task).call()[1] == 0


def test_undecided_proposals_retry_then_void_the_round_without_slashing(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: 3 revealed; every proposal meets silence until its window closes
    proto.register(chain.accounts[1:4])
    task, order = _revealed_round(proto, owner, 3)
    max_attempts = ledger.functions.MAX_ATTEMPTS().call()
    proposers = []
    # Execute
    for attempt in range(max_attempts):
        assert proto.state(task)["phase"] == PROPOSE and proto.state(task)["attempt"] == attempt
        proposers.append(ledger.functions.designatedProposer(task, 1).call())
        proto.propose(task, [WAD] * 3)
        chain.travel(TIMEOUT + 1)
        receipt = chain.send(ledger.functions.advance(task), owner)
        (undecided,) = _events(ledger, receipt, "ProposalUndecided")
        assert undecided["args"]["attempt"] == attempt
    # Assert: the round is void after MAX_ATTEMPTS (attempt never wraps); nobody was slashed and
    # nobody carries an exposure that would block its unstaking
    assert proto.state(task, 1)["phase"] == VOID
    assert proto.round_of(task) == 2
    assert set(proposers) == set(order) and all(a != b for a, b in zip(proposers, proposers[1:]))  # next, each time
    assert _stakes(ledger, order) == [MIN_STAKE] * 3
    assert [ledger.functions.nodeStatus(a).call()[2] for a in order] == [0, 0, 0]


def test_a_strict_majority_finalizes_before_the_window_closes(chain: Chain, ledger: Contract, proto: Protocol, owner: str) -> None:
    # Prepare: 5 revealed, 4 voters; 3 agree
    proto.register(chain.accounts[1:6])
    task, _ = _revealed_round(proto, owner, 5)
    proto.propose(task, [WAD] * 5)
    voters = proto.voters(task)
    proto.attest(task, voters[:2], agree=True)
    # Execute / Assert: 2 of 4 is not enough, 3 of 4 is, at once
    with chain.reverts(ledger, "FedLedgerNotDecided", task, 1, 2, 4, proto.state(task)["deadline"]):
        proto.finalize(task, [WAD] * 5)
    proto.attest(task, voters[2:3], agree=True)
    proto.finalize(task, [WAD] * 5)
    assert ledger.functions.globalModel(task).call()[1] == 1


def test_an_update_the_proposer_could_not_fetch_is_neutral(chain: Chain, ledger: Contract, proto: Protocol, owner: str) -> None:
    # Prepare: 4 revealed; the proposer could not fetch the third update (bit 2 clear)
    proto.register(chain.accounts[1:5])
    task, order = _revealed_round(proto, owner, 4)
    withheld = order[2]
    f = ledger.functions
    before = (f.reputationOf(withheld).call(), proto.earned(withheld))
    scores = [WAD, WAD, 0, WAD]
    # Execute
    proto.propose(task, scores, available=0b1011)
    assert proto.state(task)["available"] == 0b1011
    proto.attest(task, proto.voters(task))
    proto.finalize(task, scores)
    # Assert: no reputation change and no pay for it (not even as an agreeing attester)
    assert (f.reputationOf(withheld).call(), proto.earned(withheld)) == before
    assert all(proto.earned(a) > 0 for a in order if a != withheld)


def test_voters_that_cannot_check_abstain_and_the_attempt_ends_at_once_without_a_slash(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: 4 revealed, 3 voters: 1 agrees, 2 cannot fetch an update the proposer aggregated
    proto.register(chain.accounts[1:5])
    task, order = _revealed_round(proto, owner, 4)
    proto.propose(task, [WAD] * 4)
    proposer = proto.state(task)["proposer"]
    voters = proto.voters(task)
    proto.attest(task, voters[:1])
    chain.send(ledger.functions.abstain(task, 1), voters[1])
    assert proto.state(task)["abstains"] == 1 and proto.state(task)["phase"] == ATTEST
    # Execute
    receipt = chain.send(ledger.functions.abstain(task, 1), voters[2])
    # Assert: every vote is in, no majority: undecided now, the proposer keeps its stake
    assert _events(ledger, receipt, "ProposalUndecided")[0]["args"]["proposer"] == proposer
    assert proto.state(task)["phase"] == PROPOSE and proto.state(task)["attempt"] == 1
    assert _stakes(ledger, order) == [MIN_STAKE] * 4
    assert ledger.functions.memberInfo(task, 1, voters[2]).call()[3] == 3  # abstain



def test_nodes_registered_after_the_seed_cannot_be_drawn() -> None:
    # Prepare: 4 honest nodes and a task; once the round's seed block is mined its hash (the draw's
    # seed) is public, and the attacker registers 8 sybils before anyone draws.
    chain = Chain(replayable=True)
    proto = Protocol(chain, chain.deploy("FedLedger", MIN_STAKE))
    owner, *accounts = chain.accounts
    honest, sybils = accounts[:4], accounts[4:9]
    proto.register(honest)
    task = proto.create_task(owner, TaskConfig(committee_size=4))
    for i, sybil in enumerate(sybils):
        chain.send(proto.f.register(f"sybil{i}", []), sybil, MIN_STAKE)
    # Execute
    members = proto.draw(task)
    # Assert: the population was frozen when the seed was fixed
    assert len(members) == 4 and set(members) == set(honest)


def test_re_registering_replaces_the_old_multiaddrs(chain: Chain, ledger: Contract) -> None:
    # Prepare: a node registers, leaves, and comes back from somewhere else
    f, node = ledger.functions, chain.accounts[1]
    chain.send(f.register("12D3KooOld", ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/2"]), node, MIN_STAKE)
    chain.send(f.requestUnstake(), node)
    chain.travel(2 * 86400 + 1)
    chain.send(f.withdrawStake(), node)
    # Execute
    chain.send(f.register("12D3KooNew", ["/ip4/10.9.9.9/tcp/9"]), node, MIN_STAKE)
    # Assert: only the new record; stale addresses would be dialled (and could be made to stall fetches)
    assert f.nodeInfo(node).call()[2:] == ["12D3KooNew", ["/ip4/10.9.9.9/tcp/9"]]


def test_the_first_node_up_does_not_train_alone() -> None:
    # Prepare: a task made as the node makes them (TaskParams' defaults: K = 4, minimum 3), and
    # only one node registered: it used to draw a committee of one and aggregate unchecked.
    from node.chain import deploy_fedledger, dev_account
    from node.chain.types import ContractRevert
    from node.chain.providers import embedded_web3
    from node.taskspec import TaskParams

    w3 = embedded_web3(num_accounts=4)
    owner, *nodes = (dev_account(i) for i in range(4))
    chain, _ = deploy_fedledger(w3, owner, MIN_STAKE)
    first = chain.as_account(nodes[0])
    first.register("first", [], MIN_STAKE)
    task, _ = chain.create_task("bafk-initial", "bafk-spec", TaskParams(rounds=2), 10**18)
    w3.provider.ethereum_tester.mine_blocks()
    # Execute / Assert: the draw refuses to seat fewer than 3; the round waits in Draw, not void
    with pytest.raises(ContractRevert) as refused:
        first.draw_committee(task)
    assert refused.value.error == "FedLedgerCommitteeTooSmall"
    assert chain.round_state(task, 1).phase.name == "DRAW"
    # ... and once two more nodes are up, the round goes on with all three
    for i, node in enumerate(nodes[1:]):
        chain.as_account(node).register(f"n{i}", [], MIN_STAKE)
    assert first.draw_committee(task)[0] == []  # newcomers: the population is frozen anew
    members, _ = first.draw_committee(task)
    assert sorted(members) == sorted(n.address for n in nodes)


def test_task_params_state_a_sane_minimum_committee() -> None:
    from node.errors import ConfigError
    from node.taskspec import TaskParams

    assert TaskParams().effective_min_committee == 3
    assert TaskParams(committee_size=2).effective_min_committee == 2  # never more than K
    assert TaskParams(committee_size=8, min_committee=5).contract_args("m", "s")[-1] == 5
    for bad in (0, 9):
        with pytest.raises(ConfigError, match="minimum committee"):
            TaskParams(committee_size=8, min_committee=bad).validate()


def test_reveal_timing_does_not_choose_the_proposer(chain: Chain, ledger: Contract, proto: Protocol, owner: str) -> None:
    """M6: the proposer used to be the ((round + attempt) mod n)-th member to reveal, so any member
    could make itself the proposer by timing its reveal. Now the role goes by draw order, which
    the round's seed fixed before anyone could act."""
    # Prepare: 5 drawn and committed; every reveal arrangement is tried from the same state
    proto.register(chain.accounts[1:6])
    task = proto.create_task(owner, TaskConfig(committee_size=5))
    members = proto.draw(task)
    proto.commit(task, members)
    snapshot = chain.tester.take_snapshot()
    # Execute: each member in turn reveals at every position, the others in draw order
    designated: dict[tuple[str, int], str] = {}
    for attacker in members:
        others = [m for m in members if m != attacker]
        for position in range(len(members)):
            chain.tester.revert_to_snapshot(snapshot)
            proto.reveal(task, [*others[:position], attacker, *others[position:]])
            designated[attacker, position] = ledger.functions.designatedProposer(task, 1).call()
    # Assert: whatever the order of reveals, the same member proposes: the first drawn
    assert set(designated.values()) == {members[0]}


def test_after_an_undecided_attempt_the_next_proposer_goes_by_draw_order(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: 4 drawn; the first drawn never reveals, the others reveal in reverse draw order
    proto.register(chain.accounts[1:5])
    task = proto.create_task(owner, TaskConfig(committee_size=4))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members[:0:-1])
    chain.travel(TIMEOUT + 1)
    chain.send(ledger.functions.advance(task), owner)  # the reveal window closes without members[0]
    # Execute: each attempt's proposal meets silence until its window closes
    proposers = []
    for _ in range(3):
        proposers.append(ledger.functions.designatedProposer(task, 1).call())
        proto.propose(task, [WAD] * 3)
        chain.travel(TIMEOUT + 1)
        chain.send(ledger.functions.advance(task), owner)
    # Assert: the revealed members take their turns in draw order; the silent one is skipped
    assert proposers == members[1:]


@pytest.mark.parametrize("k", [2, 4, 6])
def test_half_of_the_revealed_members_cannot_slash_an_honest_proposer(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str, k: int
) -> None:
    """CI's daemon run (tests/daemon/test_adversarial.py) drew a committee of 6 in which two
    silent seats left 4 revealed: the honest proposer, one honest voter and two slanderers. The
    slanderers were 2 of the proposer's 3 voters, a strict majority, and the honest proposer was
    slashed, though they were only half of the members who did the round's work. Half is a tie."""
    # Prepare: K revealed, the designated proposer posts; K/2 slanderers among its K-1 voters
    proto.register(chain.accounts[1 : 1 + k])
    task, order = _revealed_round(proto, owner, k)
    proto.propose(task, [WAD] * k)
    proposer = proto.state(task)["proposer"]
    voters = proto.voters(task)
    slanderers, honest = voters[: k // 2], voters[k // 2 :]
    # Execute
    proto.attest(task, honest, agree=True)
    proto.attest(task, slanderers, agree=False)
    # Assert: every vote is in and neither side has more than half of the revealed members:
    # undecided, the next proposer's turn, and no stake lost
    assert proto.state(task)["phase"] == PROPOSE and proto.state(task)["attempt"] == 1
    assert _stakes(ledger, order) == [MIN_STAKE] * k, f"proposer {proposer} was slashed by {len(slanderers)} of {k}"


def test_more_than_half_of_the_revealed_members_still_reject_a_bad_proposer(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: 5 revealed; the designated proposer posts a poisoned model and 1 voter colludes
    proto.register(chain.accounts[1:6])
    task, order = _revealed_round(proto, owner, 5)
    proto.propose(task, [WAD] * 5, cid=POISONED)
    proposer = proto.state(task)["proposer"]
    voters = proto.voters(task)
    # Execute: the colluder agrees, the 3 honest voters (3 of 5 revealed) disagree
    proto.attest(task, voters[:1], agree=True)
    proto.attest(task, voters[1:], agree=False)
    # Assert: rejected at once, the proposer slashed
    assert proto.state(task)["phase"] == PROPOSE
    assert ledger.functions.stakeOf(proposer).call() == 0
