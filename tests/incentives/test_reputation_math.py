"""Properties of the pure incentive arithmetic (no chain)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incentives import IncentivesError, ScoreOutOfRangeError, UnknownNodeError
from incentives.reputation import (
    INITIAL_REPUTATION,
    REPUTATION_ALPHA,
    REPUTATION_THRESHOLD,
    WAD,
    LedgerState,
    apply_finalize,
    ema,
    judge_votes,
    round_payouts,
    round_share,
)

WADS = st.integers(min_value=0, max_value=WAD)


def test_tasks_are_created_with_the_defaults_the_mirror_assumes() -> None:
    from incentives.reputation import TaskIncentives
    from node.taskspec import TaskParams

    node, mirror = TaskParams(), TaskIncentives()
    assert (node.alpha_wad, node.reputation_threshold_wad) == (mirror.alpha, mirror.threshold) == (
        REPUTATION_ALPHA,
        REPUTATION_THRESHOLD,
    )
    assert (node.proposer_share_bps, node.attester_share_bps) == (mirror.proposer_share_bps, mirror.attester_share_bps)


def test_ema_worked_examples() -> None:
    # The default alpha is 0.4: 0.5 * 0.6 + 1 * 0.4 and 0.5 * 0.6 + 0 * 0.4.
    assert ema(INITIAL_REPUTATION, WAD) == 700_000_000_000_000_000
    assert ema(INITIAL_REPUTATION, 0) == 300_000_000_000_000_000
    assert ema(WAD, WAD) == WAD
    assert ema(0, 0) == 0


@given(rep=WADS, score=WADS)
def test_ema_stays_between_old_reputation_and_score(rep: int, score: int) -> None:
    new = ema(rep, score)
    assert min(rep, score) - 1 <= new <= max(rep, score)  # floor division may drop one below


@given(rep=WADS, low=WADS, high=WADS)
def test_ema_is_monotone_in_the_score(rep: int, low: int, high: int) -> None:
    low, high = sorted((low, high))
    assert ema(rep, low) <= ema(rep, high)


def test_scores_above_one_are_rejected() -> None:
    with pytest.raises(ScoreOutOfRangeError):
        ema(INITIAL_REPUTATION, WAD + 1)
    with pytest.raises(IncentivesError):
        apply_finalize(
            LedgerState({"a": WAD}, reward_remaining=10), owner="o", rounds=1, round=1, senders=["a"], scores=[-1]
        )


def test_unregistered_sender_is_rejected() -> None:
    with pytest.raises(UnknownNodeError):
        apply_finalize(LedgerState({}, reward_remaining=10), owner="o", rounds=1, round=1, senders=["x"], scores=[1])


def test_round_share_splits_what_is_left_evenly() -> None:
    assert round_share(100, 4, 1) == 25
    assert round_share(100, 4, 4) == 100
    assert round_share(10, 3, 2) == 5
    with pytest.raises(ValueError):
        round_share(100, 4, 5)


@given(
    share=st.integers(min_value=0, max_value=10**24),
    pairs=st.lists(st.tuples(WADS, WADS), min_size=0, max_size=8),
)
def test_payouts_never_exceed_the_share_and_skip_low_reputation(share: int, pairs: list[tuple[int, int]]) -> None:
    scores = [s for s, _ in pairs]
    reps = [r for _, r in pairs]
    payouts = round_payouts(share, scores, reps)
    assert sum(payouts) <= share
    assert sum(payouts) >= share - len(payouts) or sum(payouts) == 0  # at most one wei of dust each
    for payout, score, rep in zip(payouts, scores, reps):
        if rep < REPUTATION_THRESHOLD or score == 0:
            assert payout == 0


@given(
    reward=st.integers(min_value=1, max_value=10**24),
    scores=st.lists(WADS, min_size=0, max_size=5),
    rounds=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_finalize_conserves_the_pool(reward: int, scores: list[int], rounds: int, data: st.DataObject) -> None:
    # Prepare
    rnd = data.draw(st.integers(min_value=1, max_value=rounds))
    senders = [f"n{i}" for i in range(len(scores))]
    before = LedgerState({s: data.draw(WADS) for s in senders}, {}, reward)
    # Execute
    after = apply_finalize(before, owner="owner", rounds=rounds, round=rnd, senders=senders, scores=scores)
    # Assert: what left the pool is exactly what was credited; the last round empties it
    assert sum(after.pending.values()) + after.reward_remaining == reward
    if rnd == rounds:
        assert after.reward_remaining == 0
    assert before.pending == {}  # the input state is untouched


def test_votes_are_judged_by_their_proposals_outcomes() -> None:
    # Two rejected proposals then an accepted one: "c" checked each time, "l" agreed each time,
    # "d" disagreed with everything, "s" stayed silent on the rejected ones.
    agreeing = {"c", "l", "s"}
    rejected = [{"c": False, "l": True, "d": False}, {"c": False, "l": True, "d": False}]
    assert judge_votes("c", agreeing, rejected) == (3, 0)
    assert judge_votes("l", agreeing, rejected) == (1, 2)
    assert judge_votes("d", agreeing, rejected) == (2, 0)  # disagreeing with the accepted one: unpaid, not penalized
    assert judge_votes("s", agreeing, rejected) == (1, 0)


@given(scores=st.lists(WADS, min_size=2, max_size=2), lazy_first=st.booleans())
def test_agreeing_without_checking_never_beats_checking(scores: list[int], lazy_first: bool) -> None:
    # Prepare: a lazy and a checking attester with the same reputation and the same training score
    score = scores[0]
    lazy, checker = ("l", "c") if lazy_first else ("c", "l")
    before = LedgerState({"l": WAD // 2, "c": WAD // 2, "p": WAD // 2}, reward_remaining=10**18)
    # Execute: one rejected proposal (l agreed, c disagreed), then an accepted one both agreed with
    after = apply_finalize(
        before, owner="o", rounds=1, round=1, senders=[lazy, checker, "p"], scores=[score, score, scores[1]],
        proposer="p", agreeing={"l", "c"}, rejected=[{"l": True, "c": False}],
    )  # fmt: skip
    # Assert: the checker ends strictly ahead in reputation (a zero-score step for the lazy one,
    # unless both are at 0) and at least as well paid
    assert after.reputations["c"] > after.reputations["l"] or after.reputations["c"] == 0
    assert after.pending.get("c", 0) >= after.pending.get("l", 0)
    assert after.pending.get("c", 0) > 0
