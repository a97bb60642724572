"""Deterministic, verifiable aggregation of federated-learning updates (SPEC section 5).

Data flows one way: `node` imports this package, never the reverse.
bytes -> `update` (strict decoding) -> `fixedpoint` (exact integers) ->
(optional `clip`) -> a rule from `rules` (fedavg, median, trimmed_mean,
krum) -> `scores` -> canonical model bytes, all driven by `api`. `dtypes`
says how each tensor dtype is carried and rounded back (docs/formats.md).
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
from aggregation.abc import RuleOptions
from aggregation.dtypes import BFLOAT16, MODEL_DTYPES, layout, model_delta
from aggregation.rules import OPTIONS, RULES, apply_rule, check_options, get_rule
from aggregation.update import Update, decode_model, decode_update, encode_model, encode_update

__all__ = [
    "BFLOAT16",
    "MODEL_DTYPES",
    "OPTIONS",
    "RULES",
    "AggregateResult",
    "AggregationError",
    "EncodeError",
    "FixedPointRangeError",
    "InvalidModelError",
    "InvalidUpdateError",
    "RuleOptions",
    "UnknownRuleError",
    "Update",
    "WeightOverflowError",
    "aggregate_files",
    "aggregate_round",
    "apply_rule",
    "check_options",
    "decode_model",
    "decode_update",
    "encode_model",
    "encode_update",
    "get_rule",
    "layout",
    "model_delta",
]
