"""Reputation as an exponential moving average of contribution scores, and the round payouts.

Follows RFFL, "Robust and Fair Federated Learning" (Xu & Lyu, 2020): each
participant's reputation is an exponential moving average of its per-round
contribution, measured there as the cosine similarity between its update and
the aggregate; participants whose reputation falls below a threshold are
excluded from the rewards. Here the contribution score arrives in the accepted
proposal (one WAD score per revealed update), and rewards are the task's ETH pool.

Every function is the exact integer twin of `contracts/FedLedger.sol`
(`finalize` -> `_settle` and `_closeRound`): same operation order, same floor
divisions, so the results agree to the wei. Change both or neither.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from incentives.errors import ScoreOutOfRangeError, UnknownNodeError

WAD = 10**18
"""Fixed-point unit: WAD represents 1.0."""
BPS = 10_000
"""Basis-point denominator of the reward shares."""
INITIAL_REPUTATION = 5 * 10**17
"""Reputation of a freshly registered node (0.5)."""
REPUTATION_ALPHA = 4 * 10**17
"""Default weight of the newest score in the moving average (0.4); each task sets its own."""
REPUTATION_THRESHOLD = 2 * 10**17
"""Default threshold (0.2): nodes whose new reputation is below it earn nothing for the round."""
PROBATION_ROUNDS = 3
"""Scored rounds a newcomer's rewards are held for (FedLedger `PROBATION_ROUNDS`)."""


@dataclass(frozen=True)
class TaskIncentives:
    """The incentive parameters a task fixes at creation (FedLedger `TaskConfig`)."""

    alpha: int = REPUTATION_ALPHA
    threshold: int = REPUTATION_THRESHOLD
    proposer_share_bps: int = 500
    attester_share_bps: int = 500


def _check_score(index: int, score: int) -> None:
    if not 0 <= score <= WAD:
        raise ScoreOutOfRangeError(f"score #{index} is {score}, outside [0, {WAD}]")


def ema(rep: int, score: int, alpha: int = REPUTATION_ALPHA) -> int:
    """Return the reputation after one round: (rep * (WAD - alpha) + score * alpha) // WAD."""
    _check_score(0, score)
    return (rep * (WAD - alpha) + score * alpha) // WAD


def round_share(reward_remaining: int, rounds: int, round: int) -> int:
    """Return the wei that round `round` (1-based) of a `rounds`-round task pays out at most.

    Each round takes an equal part of what is left, so rounds in which nobody
    earned leave their share to the later rounds (and the last round's
    leftover goes back to the task owner).
    """
    if not 1 <= round <= rounds:
        raise ValueError(f"round {round} outside 1..{rounds}")
    return reward_remaining // (rounds - round + 1)


def weight(score: int, new_rep: int, threshold: int = REPUTATION_THRESHOLD) -> int:
    """Return an update's reward weight: score * new_rep // WAD, or 0 below the threshold."""
    if new_rep < threshold:
        return 0
    return score * new_rep // WAD


def round_payouts(
    share: int, scores: Sequence[int], new_reps: Sequence[int], threshold: int = REPUTATION_THRESHOLD
) -> list[int]:
    """Return each trainer's payout: share * weight_i // sum(weights), all 0 if nothing weighs.

    `scores` and `new_reps` are in reveal order; `new_reps` are the
    reputations *after* this round's update, as the contract uses them.
    """
    if len(scores) != len(new_reps):
        raise ValueError(f"{len(scores)} scores but {len(new_reps)} reputations")
    weights = [weight(s, r, threshold) for s, r in zip(scores, new_reps, strict=True)]
    total = sum(weights)
    if total == 0:
        return [0] * len(weights)
    return [share * w // total for w in weights]


def judge_votes(
    node: str, agreeing: Collection[str], rejected: Sequence[Mapping[str, bool]] = ()
) -> tuple[int, int]:
    """Return (right, wrong): `node`'s votes in one round judged by their proposals' outcomes.

    Right: agreeing with the accepted proposal (`node` in `agreeing`) and each disagreement with a
    rejected one; wrong: each agreement with a rejected one. `rejected` holds, per rejected
    proposal of the round, voter -> agreed (abstentions absent). Undecided proposals and
    disagreeing with the accepted one count neither way (FedLedger `_judgeVotes`).
    """
    right = 1 if node in agreeing else 0
    wrong = 0
    for votes in rejected:
        if node in votes:
            if votes[node]:
                wrong += 1
            else:
                right += 1
    return right, wrong


@dataclass(frozen=True)
class LedgerState:
    """The slice of contract state one task's finalize reads and writes."""

    reputations: dict[str, int]  # node address -> WAD reputation (registered nodes only)
    pending: dict[str, int] = field(default_factory=dict)  # account -> withdrawable wei
    reward_remaining: int = 0  # wei left in this task's pool
    probation: dict[str, int] = field(default_factory=dict)  # newcomer -> rounds scored so far
    held: dict[str, int] = field(default_factory=dict)  # newcomer -> rewards held for its probation
    # What the settlement that produced this state credited, per account: held or withdrawable,
    # the owner's leftover included; a vest of rewards held before is not a new credit.
    credited: dict[str, int] = field(default_factory=dict)


def judge_probation(rep: int, scored: int, threshold: int) -> bool | None:
    """Return how a newcomer's probation stands after a round (FedLedger `_judgeProbation`).

    None: it goes on. True: it ends and the held rewards vest (scored PROBATION_ROUNDS times, at
    or above INITIAL_REPUTATION). False: it ends and they are forfeited to the task's pool (under
    the threshold at any time, or under INITIAL_REPUTATION at the end).
    """
    under = rep < threshold
    if not under and scored < PROBATION_ROUNDS:
        return None
    return not under and rep >= INITIAL_REPUTATION


def apply_finalize(
    state: LedgerState,
    *,
    owner: str,
    rounds: int,
    round: int,
    senders: Sequence[str],
    scores: Sequence[int],
    proposer: str | None = None,
    agreeing: Collection[str] = (),
    params: TaskIncentives = TaskIncentives(),
    available: int | None = None,
    rejected: Sequence[Mapping[str, bool]] = (),
) -> LedgerState:
    """Return the state after `finalize(task, round, cid, scores)`; `state` is not modified.

    `senders` is the round's reveal order (the contract's `roundUpdates`),
    `proposer` the accepted proposer and `agreeing` the attesters that agreed
    with it; `rejected` the votes on the round's rejected proposals (`judge_votes`). The
    round's share is split: proposer_share_bps to the proposer, attester_share_bps equally
    per right vote, the rest to trainers by score x new reputation; nobody below the threshold
    earns. A new reputation is the training step, then one step at score 0 per wrong vote. On the
    last round the pool's leftover is credited to `owner`. `available` is the proposal's bitmap
    over `senders` (bit i: update i was aggregated; None: all were); an update left out is
    neutral: no training step and nothing earned this round (wrong votes still cost).

    Newcomers (`state.probation`) have every reward held, and their probation is judged after
    their credit (`judge_probation`); a forfeit returns to this task's pool.
    """
    return _settle(state, owner=owner, rounds=rounds, round=round, senders=senders, scores=scores,
                   proposer=proposer, agreeing=agreeing, params=params, available=available,
                   rejected=rejected, void=False)  # fmt: skip


def _settle(
    state: LedgerState,
    *,
    owner: str,
    rounds: int,
    round: int,
    senders: Sequence[str],
    scores: Sequence[int],
    proposer: str | None,
    agreeing: Collection[str],
    params: TaskIncentives,
    available: int | None,
    rejected: Sequence[Mapping[str, bool]],
    void: bool,
) -> LedgerState:
    if len(senders) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(senders)} updates")
    share = round_share(state.reward_remaining, rounds, round)  # validates `round`
    for i, score in enumerate(scores):
        _check_score(i, score)

    if available is None:
        available = (1 << len(senders)) - 1
    if available < 0 or available >> len(senders):
        raise ValueError(f"availability bitmap {available:#x} names updates beyond the {len(senders)} revealed")
    counted = [bool(available >> i & 1) for i in range(len(senders))]

    reputations = dict(state.reputations)
    pending = dict(state.pending)
    probation = dict(state.probation)
    held = dict(state.held)
    new_reps: list[int] = []
    right_votes: list[int] = []
    for sender, score, aggregated in zip(senders, scores, counted, strict=True):
        if sender not in reputations:
            raise UnknownNodeError(f"{sender} has no reputation; is it registered?")
        right, wrong = judge_votes(sender, agreeing, rejected)
        rep = reputations[sender]
        if aggregated:
            rep = ema(rep, score, params.alpha)
            if sender in probation and probation[sender] < PROBATION_ROUNDS:
                probation[sender] += 1
        for _ in range(wrong):
            rep = ema(rep, 0, params.alpha)
        reputations[sender] = rep
        new_reps.append(rep)
        right_votes.append(right if aggregated and rep >= params.threshold else 0)

    proposer_cut = share * params.proposer_share_bps // BPS
    attester_cut = share * params.attester_share_bps // BPS
    trainer_cut = share - proposer_cut - attester_cut
    paid = 0
    forfeited = 0
    credited: dict[str, int] = {}

    def credit(account: str, amount: int) -> None:
        nonlocal paid
        if amount:
            book = held if account in probation else pending
            book[account] = book.get(account, 0) + amount
            credited[account] = credited.get(account, 0) + amount
            paid += amount

    def judge(account: str) -> None:
        nonlocal forfeited
        if account not in probation:
            return
        vests = judge_probation(reputations[account], probation[account], params.threshold)
        if vests is None:
            return
        del probation[account]
        amount = held.pop(account, 0)
        if vests:
            if amount:
                pending[account] = pending.get(account, 0) + amount
        else:
            forfeited += amount

    if proposer is not None and reputations.get(proposer, 0) >= params.threshold:
        credit(proposer, proposer_cut)
    per_vote = attester_cut // sum(right_votes) if any(right_votes) else 0
    payouts = round_payouts(trainer_cut, [s if c else 0 for s, c in zip(scores, counted)], new_reps, params.threshold)
    for sender, payout, right in zip(senders, payouts, right_votes, strict=True):
        credit(sender, payout + per_vote * right)
        if not void:  # a void round judges votes only (FedLedger `_judgeVoidRound`)
            judge(sender)
    remaining = state.reward_remaining - paid + forfeited

    if round == rounds and remaining:
        pending[owner] = pending.get(owner, 0) + remaining
        credited[owner] = credited.get(owner, 0) + remaining
        remaining = 0
    return LedgerState(reputations=reputations, pending=pending, reward_remaining=remaining,
                       probation=probation, held=held, credited=credited)  # fmt: skip


def apply_void(
    state: LedgerState,
    *,
    owner: str,
    rounds: int,
    round: int,
    senders: Sequence[str] = (),
    rejected: Sequence[Mapping[str, bool]] = (),
    params: TaskIncentives = TaskIncentives(),
) -> LedgerState:
    """Return the state after round `round` ends void (FedLedger `_judgeVoidRound`, `_closeRound`).

    Nobody is paid and no update counts; each agreement with one of the round's rejected
    proposals still costs its zero-score step, and no probation is judged. On the last round the
    pool goes to `owner`. That is a finalize with no proposer, no agreement and nothing aggregated.
    """
    return _settle(
        state, owner=owner, rounds=rounds, round=round, senders=senders, scores=[0] * len(senders),
        proposer=None, agreeing=(), params=params, available=0, rejected=rejected, void=True,
    )  # fmt: skip
