"""Off-chain mirror of FedLedger's incentive arithmetic (reputation and rewards).

Pure integer functions that reproduce `contracts/FedLedger.sol` to the wei, so a
node can predict, check and explain what `finalizeRound` will do before paying
gas for it. No chain or node imports: this package sits below both.
"""

from incentives.errors import IncentivesError, ScoreOutOfRangeError, UnknownNodeError
from incentives.reputation import (
    INITIAL_REPUTATION,
    REPUTATION_ALPHA,
    REPUTATION_THRESHOLD,
    WAD,
    LedgerState,
    apply_finalize,
    ema,
    round_payouts,
    round_share,
    weight,
)

__all__ = [
    "INITIAL_REPUTATION",
    "REPUTATION_ALPHA",
    "REPUTATION_THRESHOLD",
    "WAD",
    "IncentivesError",
    "LedgerState",
    "ScoreOutOfRangeError",
    "UnknownNodeError",
    "apply_finalize",
    "ema",
    "round_payouts",
    "round_share",
    "weight",
]
