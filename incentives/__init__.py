"""Off-chain mirror of FedLedger's incentive arithmetic (reputation and rewards) and of how
attestations decide a proposal (`incentives.outcome`).

Pure integer functions that reproduce `contracts/FedLedger.sol` to the wei, so a
node can predict, check and explain what `finalize` will do before paying
gas for it. No chain or node imports: this package sits below both.
"""

from incentives.errors import IncentivesError, ScoreOutOfRangeError, UnknownNodeError
from incentives.outcome import MAX_ATTEMPTS, Outcome, outcome, round_voided, voters_of
from incentives.reputation import (
    BPS,
    INITIAL_REPUTATION,
    PROBATION_ROUNDS,
    REPUTATION_ALPHA,
    REPUTATION_THRESHOLD,
    WAD,
    LedgerState,
    TaskIncentives,
    apply_finalize,
    apply_void,
    ema,
    judge_probation,
    judge_votes,
    round_payouts,
    round_share,
    weight,
)

__all__ = [
    "BPS",
    "INITIAL_REPUTATION",
    "MAX_ATTEMPTS",
    "PROBATION_ROUNDS",
    "REPUTATION_ALPHA",
    "REPUTATION_THRESHOLD",
    "WAD",
    "IncentivesError",
    "LedgerState",
    "Outcome",
    "ScoreOutOfRangeError",
    "TaskIncentives",
    "UnknownNodeError",
    "apply_finalize",
    "apply_void",
    "ema",
    "judge_probation",
    "judge_votes",
    "outcome",
    "round_payouts",
    "round_share",
    "round_voided",
    "voters_of",
    "weight",
]
