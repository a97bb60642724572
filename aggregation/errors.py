"""The root of every error the aggregation package raises on purpose.

`aggregation` sits below `node` in the data flow, so it cannot reuse the
node's `FedLedgerError`; the node catches `AggregationError` at its boundary.
"""


class AggregationError(Exception):
    """Base class of every expected failure in update decoding and aggregation."""


class InvalidUpdateError(AggregationError):
    """Raised when an update's bytes or contents are rejected (its sender scores 0)."""


class InvalidModelError(AggregationError):
    """Raised when a global (base) model file is not a valid float32 safetensors model."""


class EncodeError(AggregationError):
    """Raised when tensors or metadata cannot be written canonically (bad name, dtype or value)."""


class FixedPointRangeError(AggregationError):
    """Raised when a value is non-finite or outside the fixed-point range |x| < 128."""


class WeightOverflowError(AggregationError):
    """Raised when aggregation weights are not positive or their total could overflow int64."""


class UnknownRuleError(AggregationError):
    """Raised when an aggregation rule name is not in the registry."""
