"""Off-chain mirror of FedLedger's incentive arithmetic (reputation and rewards).

Pure integer functions that reproduce `contracts/FedLedger.sol` to the wei, so a
node can predict, check and explain what `finalize` will do before paying
gas for it. No chain or node imports: this package sits below both.
"""

from incentives.errors import IncentivesError, ScoreOutOfRangeError, UnknownNodeError
from incentives.reputation import (
    BPS,
    INITIAL_REPUTATION,
    REPUTATION_ALPHA,
    REPUTATION_THRESHOLD,
    WAD,
    LedgerState,
    TaskIncentives,
    apply_finalize,
    ema,
    round_payouts,
    round_share,
    weight,
)

__all__ = [
    "BPS",
    "INITIAL_REPUTATION",
    "REPUTATION_ALPHA",
    "REPUTATION_THRESHOLD",
    "WAD",
    "IncentivesError",
    "LedgerState",
    "ScoreOutOfRangeError",
    "TaskIncentives",
    "UnknownNodeError",
    "apply_finalize",
    "ema",
    "round_payouts",
    "round_share",
    "weight",
]
