"""Attesters are paid for checking, not for agreeing (issue #16, "lazy attesting pays").

An attester that agrees with every proposal without re-running the aggregation saves the work of
checking. Were agreeing with a rejected proposal free and only agreement paid, it would earn as
much as one that checks. Every test here was first run against the contract it guards and failed
there. Run: .venv/bin/python -m pytest -q tests/contracts/test_fedledger_attesters.py
"""

from __future__ import annotations

from ledger_harness import MIN_STAKE, REPUTATION_ALPHA, REWARD, TIMEOUT, VOID, WAD, Chain, Protocol, TaskConfig
from web3.contract import Contract

from incentives.reputation import LedgerState, apply_void

POISONED = b"bafk-poisoned-model"


def _round_with_a_rejected_proposal(
    chain: Chain, proto: Protocol, owner: str, lazy_agrees_on_accepted: bool = True
) -> tuple[int, list[str], list[int]]:
    """Task 1 (committee of 5, every member revealed): attempt 0's proposer posts a poisoned model;
    the lazy attester agrees, the checker and the two others disagree (rejected); attempt 1's
    honest proposal is agreed by all voters (the lazy one too unless told otherwise) and finalized.
    Returns (task, draw order, scores); draw order: proposer 0, proposer 1, lazy, checker, other."""
    proto.register(chain.accounts[1:6])
    task = proto.create_task(owner, TaskConfig(committee_size=5, attester_share_bps=1000))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    first, second, lazy, checker, other = members  # every member revealed: proposers in draw order
    scores = [WAD] * 5
    proto.propose(task, scores, cid=POISONED)
    assert proto.state(task)["proposer"] == first
    proto.attest(task, [lazy], agree=True)
    proto.attest(task, [checker, other, second], agree=False)  # 3 of 4 voters: rejected at once
    assert proto.state(task)["attempt"] == 1
    proto.propose(task, scores)
    assert proto.state(task)["proposer"] == second
    proto.attest(task, [checker, other, first])  # 3 of 4 agree: accepted
    if lazy_agrees_on_accepted:
        proto.attest(task, [lazy])
    proto.finalize(task, scores)
    return task, members, scores


def test_agreeing_without_checking_earns_less_than_checking(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare / Execute: the lazy attester and the checker trained equally well (same score) and
    # both agreed with the accepted proposal; only the checker disagreed with the poisoned one
    _, members, _ = _round_with_a_rejected_proposal(chain, proto, owner)
    lazy, checker = members[2], members[3]
    f = ledger.functions
    # Assert: checking pays strictly more, and agreeing with a rejected proposal costs reputation
    assert proto.earned(checker) > proto.earned(lazy)
    assert f.reputationOf(checker).call() > f.reputationOf(lazy).call()


def test_each_vote_on_the_winning_side_is_paid_and_an_agreement_with_a_rejected_proposal_is_a_zero_score(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare / Execute: as above, but the lazy attester is too late for the accepted proposal
    _, members, _ = _round_with_a_rejected_proposal(chain, proto, owner, lazy_agrees_on_accepted=False)
    first, second, lazy, checker, other = members
    f = ledger.functions
    # Assert: the reputations. Everybody scored WAD: one EMA step at WAD from 0.5; the lazy
    # attester takes one more step, at 0, for agreeing with the rejected proposal
    trained = (WAD // 2 * (WAD - REPUTATION_ALPHA) + WAD * REPUTATION_ALPHA) // WAD
    assert [f.reputationOf(m).call() for m in members] == [trained] * 2 + [trained * (WAD - REPUTATION_ALPHA) // WAD] + [trained] * 2
    # ... and the attester share is paid per vote that matched its proposal's outcome: the checker
    # and `other` cast two (disagree on the rejected, agree on the accepted), `first` one (it
    # proposed the rejected one), `second` one (it proposed the accepted one), lazy none
    share = (REWARD + MIN_STAKE) // 2  # round 1 of 2 of the pool, which holds the rejected proposer's slash
    per_vote = share * 1000 // 10_000 // 6
    trainer_cut = share - share * 500 // 10_000 - share * 1000 // 10_000
    weights = [trained] * 4 + [trained * (WAD - REPUTATION_ALPHA) // WAD]
    pay = [trainer_cut * w // sum(weights) for w in weights]
    by_member = dict(zip([first, second, checker, other, lazy], pay))
    expected = {
        first: by_member[first] + per_vote,
        second: by_member[second] + per_vote + share * 500 // 10_000,
        checker: by_member[checker] + 2 * per_vote,
        other: by_member[other] + 2 * per_vote,
        lazy: by_member[lazy],
    }
    assert {m: proto.earned(m) for m in members} == expected  # held: they are newcomers


def test_agreeing_with_a_rejected_proposal_costs_even_when_the_round_ends_void(
    chain: Chain, ledger: Contract, proto: Protocol, owner: str
) -> None:
    # Prepare: attempt 0's poisoned proposal is rejected (the lazy attester agreed with it), then
    # the next proposals meet silence until the round is void: nothing is finalized, nobody paid
    proto.register(chain.accounts[1:6])
    task = proto.create_task(owner, TaskConfig(committee_size=5))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    first, second, lazy, checker, other = members
    f = ledger.functions
    before = {m: f.reputationOf(m).call() for m in members}
    proto.propose(task, [WAD] * 5, cid=POISONED)
    proto.attest(task, [lazy], agree=True)
    proto.attest(task, [checker, other, second], agree=False)
    # Execute
    for _ in range(f.MAX_ATTEMPTS().call() - 1):
        proto.propose(task, [WAD] * 5)
        chain.travel(TIMEOUT + 1)
        chain.send(f.advance(task), owner)
    # Assert: void, and only the lazy attester's reputation moved: one zero-score step
    assert proto.state(task, 1)["phase"] == VOID
    after = {m: f.reputationOf(m).call() for m in members}
    assert after == {**before, lazy: before[lazy] * (WAD - REPUTATION_ALPHA) // WAD}
    # ... as the mirror says
    mirrored = apply_void(
        LedgerState(before), owner=owner, rounds=2, round=1, senders=f.roundUpdates(task, 1).call()[0],
        rejected=[{lazy: True, checker: False, other: False, second: False}],
    )  # fmt: skip
    assert mirrored.reputations == after
