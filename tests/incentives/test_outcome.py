"""The proposal-outcome rule (incentives.outcome): properties, and the chain agrees with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incentives.outcome import MAX_ATTEMPTS, Outcome, outcome, round_voided, voters_of
from tests.contracts.ledger_harness import ATTEST, PROPOSE, TIMEOUT, WAD, Chain, Protocol, TaskConfig


@st.composite
def tallies(draw: st.DrawFn) -> tuple[int, int, int]:
    voters = draw(st.integers(0, 64))
    agrees = draw(st.integers(0, voters))
    return voters, agrees, draw(st.integers(0, voters - agrees))


@given(tallies(), st.booleans())
def test_only_a_strict_majority_decides(tally: tuple[int, int, int], closed: bool) -> None:
    voters, agrees, disagrees = tally
    result = outcome(voters, agrees, disagrees, closed)
    assert (result is Outcome.ACCEPTED) == (2 * agrees > voters)
    assert (result is Outcome.REJECTED) == (2 * disagrees > voters)
    if closed:
        assert result is not Outcome.PENDING


def test_worked_examples_from_issue_14() -> None:
    # an outsider proposer, 4 revealed voters: 2 agree, 2 disagree -> a tie, undecided (no slash)
    assert outcome(voters_of(4, proposer_revealed=False), 2, 2) is Outcome.UNDECIDED
    # 5 revealed, the proposer one of them: 1 agrees, 3 silent until the window closes
    assert outcome(voters_of(5, proposer_revealed=True), 1, 0, window_closed=True) is Outcome.UNDECIDED
    assert outcome(4, 3, 0) is Outcome.ACCEPTED and outcome(4, 2, 0) is Outcome.PENDING
    assert outcome(0, 0, 0, window_closed=True) is Outcome.UNDECIDED  # a lone proposer has no voters
    assert [round_voided(a) for a in range(MAX_ATTEMPTS)] == [False] * (MAX_ATTEMPTS - 1) + [True]


def test_impossible_tallies_are_refused() -> None:
    with pytest.raises(ValueError):
        outcome(3, 2, 2)


@pytest.mark.parametrize("agree_count,disagree_count", [(0, 0), (1, 0), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2), (3, 0)])
def test_chain_decides_as_the_mirror(agree_count: int, disagree_count: int) -> None:
    # Prepare: 4 revealed members, the designated proposer posts; 3 voters
    chain = Chain()
    proto = Protocol(chain, chain.deploy("FedLedger", 10**16))
    owner = chain.accounts[0]
    proto.register(chain.accounts[1:5])
    task = proto.create_task(owner, TaskConfig(committee_size=4))
    members = proto.draw(task)
    proto.commit(task, members)
    proto.reveal(task, members)
    proto.propose(task, [WAD] * 4)
    proposer = proto.state(task)["proposer"]
    voters = proto.voters(task)
    # Execute
    proto.attest(task, voters[:agree_count], agree=True)
    if proto.state(task)["phase"] == ATTEST:
        proto.attest(task, voters[agree_count : agree_count + disagree_count], agree=False)
    expected = outcome(len(voters), agree_count, disagree_count)
    # Assert
    phase = proto.state(task, 1)["phase"]
    if expected in (Outcome.REJECTED, Outcome.UNDECIDED):
        assert phase == PROPOSE
    else:
        assert phase == ATTEST
        chain.travel(TIMEOUT + 1)
        chain.send(proto.f.advance(task), owner)
        after = outcome(len(voters), agree_count, disagree_count, window_closed=True)
        assert proto.state(task, 1)["phase"] == (ATTEST if after is Outcome.ACCEPTED else PROPOSE)
    slashed = proto.f.stakeOf(proposer).call() == 0
    assert slashed == (expected is Outcome.REJECTED)
