"""The proposal-outcome rule (incentives.outcome): properties, and the chain agrees with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incentives.outcome import MAX_ATTEMPTS, Outcome, outcome, round_voided, voters_of
from tests.contracts.ledger_harness import ATTEST, PROPOSE, TIMEOUT, WAD, Chain, Protocol, TaskConfig


@st.composite
def tallies(draw: st.DrawFn) -> tuple[int, bool, int, int]:
    revealed = draw(st.integers(0, 64))
    proposer_revealed = draw(st.booleans()) if revealed else False
    voters = voters_of(revealed, proposer_revealed)
    agrees = draw(st.integers(0, voters))
    return revealed, proposer_revealed, agrees, draw(st.integers(0, voters - agrees))


@given(tallies(), st.booleans())
def test_only_a_strict_majority_decides(tally: tuple[int, bool, int, int], closed: bool) -> None:
    revealed, proposer_revealed, agrees, disagrees = tally
    result = outcome(revealed, proposer_revealed, agrees, disagrees, closed)
    assert (result is Outcome.ACCEPTED) == (2 * agrees > voters_of(revealed, proposer_revealed))
    assert (result is Outcome.REJECTED) == (2 * disagrees > revealed)
    if closed:
        assert result is not Outcome.PENDING


@given(st.integers(1, 32))
def test_half_of_the_revealed_members_never_slash(half: int) -> None:
    # 2h revealed, the proposer among them: h of its 2h - 1 voters disagree, the rest agree
    assert outcome(2 * half, True, half - 1, half) is Outcome.UNDECIDED
    assert outcome(2 * half + 1, True, half - 1, half + 1) is Outcome.REJECTED


def test_worked_examples_from_issue_14() -> None:
    # an outsider proposer, 4 revealed voters: 2 agree, 2 disagree -> a tie, undecided (no slash)
    assert outcome(4, False, 2, 2) is Outcome.UNDECIDED
    # 5 revealed, the proposer one of them: 1 agrees, 3 silent until the window closes
    assert outcome(5, True, 1, 0, window_closed=True) is Outcome.UNDECIDED
    # 4 revealed, the proposer one of them: 2 of its 3 voters disagree -> half, not a majority
    assert outcome(4, True, 1, 2) is Outcome.UNDECIDED and outcome(4, True, 0, 3) is Outcome.REJECTED
    assert outcome(4, False, 3, 0) is Outcome.ACCEPTED and outcome(4, False, 2, 0) is Outcome.PENDING
    assert outcome(1, True, 0, 0, window_closed=True) is Outcome.UNDECIDED  # a lone proposer has no voters
    assert [round_voided(a) for a in range(MAX_ATTEMPTS)] == [False] * (MAX_ATTEMPTS - 1) + [True]


def test_impossible_tallies_are_refused() -> None:
    with pytest.raises(ValueError):
        outcome(4, True, 2, 2)


@pytest.mark.parametrize("agree_count,disagree_count", [(0, 0), (1, 0), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2), (3, 0), (0, 3)])
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
    expected = outcome(4, True, agree_count, disagree_count)
    # Assert
    phase = proto.state(task, 1)["phase"]
    if expected in (Outcome.REJECTED, Outcome.UNDECIDED):
        assert phase == PROPOSE
    else:
        assert phase == ATTEST
        chain.travel(TIMEOUT + 1)
        chain.send(proto.f.advance(task), owner)
        after = outcome(4, True, agree_count, disagree_count, window_closed=True)
        assert proto.state(task, 1)["phase"] == (ATTEST if after is Outcome.ACCEPTED else PROPOSE)
    slashed = proto.f.stakeOf(proposer).call() == 0
    assert slashed == (expected is Outcome.REJECTED)
