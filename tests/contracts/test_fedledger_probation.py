"""Newcomers are on probation: their rewards are held until they have earned reputation (#16).

A new identity starts at reputation 0.5. Before probation, that undid exclusion: a free-rider kept
the pay of its first, honest-looking round, and an excluded attacker came back as a new account and
was paid again at once; and a task whose threshold is above 0.5 locked every newcomer out. The
exploit tests here were first run against the contract before probation and failed there.
Run: .venv/bin/python -m pytest -q tests/contracts/test_fedledger_probation.py
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger_harness import MIN_STAKE, REPUTATION_ALPHA, WAD, Chain, Protocol, TaskConfig
from web3.contract import Contract
from web3.logs import DISCARD

from incentives.reputation import INITIAL_REPUTATION, PROBATION_ROUNDS, ema

UNSTAKE_DELAY = 2 * 24 * 3600


def _round(proto: Protocol, task: int, by_node: Mapping[str, int], seated: list[str] | None = None) -> list:
    """One honest round in which every drawn member reveals and gets its score from `by_node`;
    returns the finalize receipt's RewardHeld, RewardCredited and ProbationEnded events, and puts
    the round's participants in `seated` when given."""
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    scores = [by_node[n] for n in proto.revealed(task)]
    if seated is not None:
        seated[:] = proto.revealed(task)
    proto.propose(task, scores)
    proto.attest(task, proto.voters(task))
    receipt = proto.finalize(task, scores)
    events = proto.ledger.events
    return [
        e for kind in (events.RewardHeld, events.RewardCredited, events.ProbationEnded)
        for e in kind().process_receipt(receipt, errors=DISCARD)
    ]  # fmt: skip


def _no_proposer_pay(**changes) -> TaskConfig:
    """A task that pays trainers only: who earns what is then the scores' doing alone."""
    return TaskConfig(proposer_share_bps=0, attester_share_bps=0, **changes)


def test_a_free_rider_keeps_none_of_its_first_rounds_pay(chain: Chain, ledger: Contract, proto: Protocol, owner: str) -> None:
    # Prepare: three honest nodes and a free-rider that trains honestly once, then sends nothing of
    # value; its reputation stays above the 0.2 threshold for three rounds
    honest, rider = chain.accounts[1:4], chain.accounts[4]
    proto.register([*honest, rider])
    task = proto.create_task(owner, _no_proposer_pay(rounds=4, committee_size=4))
    f = ledger.functions
    # Execute
    _round(proto, task, {**dict.fromkeys(honest, WAD), rider: WAD})
    held_after_round_1 = f.probationOf(rider).call()[2]
    for _ in range(PROBATION_ROUNDS - 1):
        events = _round(proto, task, {**dict.fromkeys(honest, WAD), rider: 0})
    # Assert: nothing to withdraw; its honest-looking round was paid into probation, and the
    # probation ended forfeiting it (reputation under the 0.5 it started with), back to the pool
    assert f.pendingRewards(rider).call() == 0
    assert held_after_round_1 > 0
    ended = {e["args"]["account"]: e["args"] for e in events if e["event"] == "ProbationEnded"}
    assert ended[rider]["forfeited"] == held_after_round_1 and ended[rider]["vested"] == 0
    assert f.reputationOf(rider).call() < INITIAL_REPUTATION
    assert f.probationOf(rider).call() == [False, PROBATION_ROUNDS, 0]
    assert f.pendingRewards(rider).call() == 0
    assert all(ended[h]["vested"] > 0 and f.pendingRewards(h).call() == ended[h]["vested"] for h in honest)


def test_a_sybil_that_comes_back_as_a_new_identity_is_paid_nothing_for_it(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: an attacker excluded after poisoning (under the threshold), who registers a fresh
    # account and behaves for one round before it attacks again
    honest, first, second = chain.accounts[1:4], chain.accounts[4], chain.accounts[5]
    proto.register([*honest, first])
    task = proto.create_task(owner, _no_proposer_pay(rounds=8, committee_size=4))
    f = ledger.functions
    while f.reputationOf(first).call() >= TaskConfig().reputation_threshold:
        _round(proto, task, {**dict.fromkeys(honest, WAD), first: 0})
    proto.register([second])
    # (a node registering after a round's seed is public waits for the next round's draw)
    _round(proto, task, dict.fromkeys(honest, WAD))
    # Execute: the new identity's honest-looking round, then its attacks
    seated: list[str] = []
    events = _round(proto, task, {**dict.fromkeys(honest, WAD), second: WAD}, seated)
    assert second in seated and first not in seated  # the excluded identity is not drawn any more
    held = {e["args"]["account"]: e["args"]["amount"] for e in events if e["event"] == "RewardHeld"}
    pending_then = f.pendingRewards(second).call()
    while f.probationOf(second).call()[0]:
        _round(proto, task, {**dict.fromkeys(honest, WAD), second: 0})
    # Assert: its round was paid into probation, not withdrawable, and then forfeited
    assert held[second] > 0 and pending_then == 0
    assert f.pendingRewards(first).call() == f.pendingRewards(second).call() == 0


def test_newcomers_are_paid_what_they_held_when_probation_ends(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare
    nodes = chain.accounts[1:5]
    proto.register(nodes)
    task = proto.create_task(owner, TaskConfig(rounds=PROBATION_ROUNDS + 1, committee_size=4))
    f = ledger.functions
    # Execute / Assert: every reward of the first rounds is held, none withdrawable
    held: dict[str, int] = dict.fromkeys(nodes, 0)
    for rnd in range(1, PROBATION_ROUNDS):
        for e in _round(proto, task, dict.fromkeys(nodes, WAD)):
            assert e["event"] == "RewardHeld"
            held[e["args"]["account"]] += e["args"]["amount"]
        assert all(f.probationOf(n).call() == [True, rnd, held[n]] and f.pendingRewards(n).call() == 0 for n in nodes)
    # the last probation round's reward is held, then everything vests in the same transaction
    events = _round(proto, task, dict.fromkeys(nodes, WAD))
    for e in events:
        if e["event"] == "RewardHeld":
            held[e["args"]["account"]] += e["args"]["amount"]
    vested = {e["args"]["account"]: e["args"]["vested"] for e in events if e["event"] == "ProbationEnded"}
    assert vested == held and all(v > 0 for v in vested.values())
    assert all(f.pendingRewards(n).call() == held[n] and f.probationOf(n).call() == [False, PROBATION_ROUNDS, 0]
               for n in nodes)  # fmt: skip
    # after probation, rewards are credited at once
    assert {e["event"] for e in _round(proto, task, dict.fromkeys(nodes, WAD))} == {"RewardCredited"}


def test_a_threshold_above_the_initial_reputation_does_not_lock_newcomers_out(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: only newcomers (reputation 0.5) and a task that pays from 0.6 up
    nodes = chain.accounts[1:5]
    proto.register(nodes)
    task = proto.create_task(owner, TaskConfig(rounds=2, committee_size=4, reputation_threshold=6 * WAD // 10))
    # Execute / Assert: the newcomers are seated for their first round
    first = {**dict.fromkeys(nodes[:3], WAD), nodes[3]: 0}
    seated: list[str] = []
    _round(proto, task, first, seated)
    assert sorted(seated) == sorted(nodes)
    # whoever earned the threshold stays; the one that scored 0 fell under it and is not seated again
    assert ema(INITIAL_REPUTATION, WAD, REPUTATION_ALPHA) >= 6 * WAD // 10 > ema(INITIAL_REPUTATION, 0, REPUTATION_ALPHA)
    assert sorted(proto.draw(task)) == sorted(nodes[:3])
    assert ledger.functions.probationOf(nodes[3]).call()[0] is False


def test_leaving_during_probation_neither_restarts_nor_escapes_it_nor_loses_influence(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: a newcomer with one scored round and held pay
    nodes = chain.accounts[1:5]
    proto.register(nodes)
    task = proto.create_task(owner, TaskConfig(rounds=1, committee_size=4))
    _round(proto, task, dict.fromkeys(nodes, WAD))
    f = ledger.functions
    leaver = nodes[0]
    before = (f.reputationOf(leaver).call(), f.probationOf(leaver).call())
    assert before[1][:2] == [True, 1] and before[1][2] > 0
    # Execute: it unstakes, withdraws and registers again
    chain.send(f.requestUnstake(), leaver)
    chain.travel(UNSTAKE_DELAY + 1)
    chain.send(f.withdrawStake(), leaver)
    assert f.probationOf(leaver).call() == before[1]  # what it held stays held while it is away
    chain.send(f.register("12D3KooBack", []), leaver, MIN_STAKE)
    # Assert: same reputation, same probation, same held rewards
    assert (f.reputationOf(leaver).call(), f.probationOf(leaver).call()) == before
    # and the influence its first round earned (reputation before influence): a new task seats it
    # as one whose update counts
    again = proto.create_task(owner, TaskConfig(rounds=1, committee_size=4))
    _round(proto, again, dict.fromkeys(nodes, WAD))
    senders, _, _, earned = f.roundUpdates(again, 1).call()
    assert dict(zip(senders, earned)) == dict.fromkeys(nodes, True)


def test_the_chain_records_at_reveal_whether_a_sender_has_earned_influence(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    """Reputation before influence: `roundUpdates` says, per update, whether its sender had earned
    influence before it revealed (the aggregate takes only those, node side). The founders of a
    federation earn it in its first round whatever they score; a newcomer to an established one
    earns it only with a score above 0."""
    # Prepare: four founders, one of which scores 0 in the first round
    founders, newcomer = chain.accounts[1:5], chain.accounts[5]
    proto.register(founders)
    task = proto.create_task(owner, _no_proposer_pay(rounds=5, committee_size=5))
    f = ledger.functions

    def earned_in(rnd: int) -> dict[str, bool]:
        senders, _, _, earned = f.roundUpdates(task, rnd).call()
        return dict(zip(senders, earned))

    scores = {**dict.fromkeys(founders[:3], WAD // 3), founders[3]: 0}
    # Execute: the founding round; then the newcomer registers, waits a round, scores 0, then above 0
    _round(proto, task, scores)
    proto.register([newcomer])
    _round(proto, task, {**scores, newcomer: 0})
    seated: list[str] = []
    _round(proto, task, {**scores, newcomer: 0}, seated)
    assert newcomer in seated
    _round(proto, task, {**scores, newcomer: WAD // 3})
    _round(proto, task, {**scores, newcomer: 0})
    # Assert: nobody had earned in round 1; every founder had from round 2, the zero-scorer too
    assert earned_in(1) == dict.fromkeys(founders, False)
    assert {n: e for n, e in earned_in(2).items() if n in founders} == dict.fromkeys(founders, True)
    # the newcomer's score of 0 (round 3) earned nothing; its score above 0 (round 4) did
    assert earned_in(3)[newcomer] is False and earned_in(4)[newcomer] is False and earned_in(5)[newcomer] is True
    assert earned_in(1) == dict.fromkeys(founders, False)  # a round's record never changes
