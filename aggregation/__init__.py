"""Deterministic, verifiable aggregation of federated-learning updates (SPEC section 5).

Data flows one way: `node` imports this package, never the reverse.
bytes -> `update` (strict decoding) -> `fixedpoint` (exact integers) ->
a rule from `rules` -> `scores` -> canonical model bytes, all driven by `api`.
"""

from aggregation.api import AggregateResult, aggregate_files, aggregate_round
from aggregation.errors import (
    AggregationError,
    EncodeError,
    FixedPointRangeError,
    InvalidModelError,
    InvalidUpdateError,
    UnknownRuleError,
    WeightOverflowError,
)
from aggregation.rules import RULES, get_rule
from aggregation.update import Update, decode_model, decode_update, encode_model, encode_update

__all__ = [
    "RULES",
    "AggregateResult",
    "AggregationError",
    "EncodeError",
    "FixedPointRangeError",
    "InvalidModelError",
    "InvalidUpdateError",
    "UnknownRuleError",
    "Update",
    "WeightOverflowError",
    "aggregate_files",
    "aggregate_round",
    "decode_model",
    "decode_update",
    "encode_model",
    "encode_update",
    "get_rule",
]
