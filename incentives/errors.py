"""The root of every error the incentives package raises on purpose."""


class IncentivesError(ValueError):
    """Base class of every rejected input to the incentive arithmetic."""


class ScoreOutOfRangeError(IncentivesError):
    """Raised when a contribution score is outside [0, WAD] (the contract reverts too)."""


class UnknownNodeError(IncentivesError):
    """Raised when a finalize names a sender with no known reputation (not registered)."""
