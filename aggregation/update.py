"""The update and model file formats of SPEC section 5.

An update is a canonical safetensors file of tensors named by the model's
state-dict keys, holding the weight delta from the round's base model, with
metadata ``format=fedledger-update/1``, ``num_samples``, ``task``, ``round``
and ``base`` (the base model's CID). A global model is the same kind of file
holding full weights. A model's tensors may have any dtype of
`dtypes.MODEL_DTYPES`; an update carries float32 deltas for its float
parameters and int64 deltas for its integer buffers (`dtypes.DELTA_DTYPES`),
so a float32-only model's updates are float32 only, as they always were.
Decoding validates everything a hostile sender could get wrong before any value
is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from aggregation.dtypes import (
    DELTA_DTYPES,
    FLOATS,
    INT_RANGES,
    MODEL_DTYPES,
    as_float32,
    code_of,
    deltas_in_range,
    integers_in_range,
)
from aggregation.errors import EncodeError, InvalidModelError, InvalidUpdateError
from aggregation.fixedpoint import Q_BOUND, VALUE_BOUND, in_range
from aggregation.safetensors_io import F32_ONLY, read_safetensors_values, write_safetensors

UPDATE_FORMAT = "fedledger-update/1"

# A claim of more than 2**32 samples is hostile or broken; bounding it keeps the
# total weight of up to 1024 uncapped updates under fixedpoint.MAX_TOTAL_WEIGHT.
MAX_NUM_SAMPLES = 2**32

# Canonical positive decimal: ASCII digits, no sign, no leading zero, no
# whitespace or underscores (Python's int() would accept all of those, and
# "٣", so two parsers could disagree on the same bytes).
_POSITIVE_DECIMAL = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)


@dataclass(frozen=True)
class Update:
    """A decoded, validated update."""

    tensors: dict[str, np.ndarray]  # delta per state-dict key, sorted by key: float32, or int64 for an integer buffer
    num_samples: int  # from metadata; 1 when the sender gave none
    metadata: dict[str, str] = field(default_factory=dict)


def _check_values(tensors: Mapping[str, np.ndarray], error: type[Exception], values: np.ndarray | None = None) -> None:
    # `values`, when given, holds every tensor's values: one vectorized pass
    # instead of two numpy reductions per tensor (200k tiny tensors took
    # seconds). Only a file that fails is walked tensor by tensor, to name one.
    if values is not None and in_range(values):
        return
    for name, array in tensors.items():
        code = code_of(array) if values is None else "F32"
        if code in FLOATS and not in_range(array if code == "F32" else as_float32(array, code)):
            raise error(f"tensor {name!r} has non-finite values or values with |x| >= {VALUE_BOUND:g}")


def _check_deltas(tensors: Mapping[str, np.ndarray], error: type[Exception]) -> None:
    # Integer deltas are bounded like fixed-point ones: every rule's sums stay exact.
    for name, array in tensors.items():
        if np.asarray(array).dtype == np.int64 and not deltas_in_range(array):
            raise error(f"integer delta {name!r} has values with |d| >= 2**{Q_BOUND.bit_length() - 1}")


def encode_update(delta: Mapping[str, np.ndarray], *, num_samples: int, task: int, round: int, base: str) -> bytes:
    """Write `delta` (float32 per state-dict key, int64 for an integer buffer) as a canonical update file."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 0 < num_samples <= MAX_NUM_SAMPLES:
        raise EncodeError(f"num_samples must be an integer in [1, 2**32], got {num_samples!r}")
    # Fail at the sender rather than have every verifier reject the update.
    for name, array in delta.items():
        if np.asarray(array).dtype not in (np.float32, np.int64):
            raise EncodeError(f"tensor {name!r} has dtype {np.asarray(array).dtype}, expected float32 (or int64 for an integer buffer)")
    _check_values(delta, EncodeError)
    _check_deltas(delta, EncodeError)
    metadata = {
        "format": UPDATE_FORMAT,
        "num_samples": str(num_samples),
        "task": str(int(task)),
        "round": str(int(round)),
        "base": base,
    }
    return write_safetensors(delta, metadata, accept=_DELTA_CODES)


_DELTA_CODES = frozenset(DELTA_DTYPES.values())
_MODEL_CODES = frozenset(MODEL_DTYPES)


def _parse_num_samples(metadata: Mapping[str, str]) -> int:
    text = metadata.get("num_samples")
    if text is None:
        return 1
    if not _POSITIVE_DECIMAL.fullmatch(text) or int(text) > MAX_NUM_SAMPLES:
        raise InvalidUpdateError(f"num_samples {text[:40]!r} is not a decimal integer in [1, 2**32]")
    return int(text)


def _names(names: list[str]) -> str:
    # Unknown names come from the sender: at most five, each cut short, so a
    # megabyte-long name still makes a one-line error.
    return "[" + ", ".join(repr(n) if len(n) <= 60 else repr(n[:57]) + "..." for n in names[:5]) + "]"


def _delta_codes(dtypes: Mapping[str, str] | None) -> tuple[Mapping[str, str] | None, frozenset[str]]:
    # Each tensor's delta dtype code (None: all F32) and the codes an update may hold.
    if dtypes is None or all(code == "F32" for code in dtypes.values()):
        return None, F32_ONLY
    unknown = sorted({code for code in dtypes.values() if code not in DELTA_DTYPES})
    if unknown:
        raise InvalidModelError(f"the model has dtypes the format does not carry: {', '.join(unknown)}")
    return {name: DELTA_DTYPES[code] for name, code in dtypes.items()}, _DELTA_CODES


def _check_layout(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str] | None,
    wanted: Mapping[str, str] | None,
) -> None:
    if tensors.keys() != expected.keys():
        missing = sorted(set(expected) - set(tensors))
        unknown = sorted(set(tensors) - set(expected))
        raise InvalidUpdateError(f"update keys do not match the model: missing {_names(missing)}, unknown {_names(unknown)}")
    for name, array in tensors.items():
        shape = expected[name]
        if array.shape != shape and array.shape != tuple(shape):
            raise InvalidUpdateError(f"tensor {name!r} has shape {list(array.shape)}, expected {list(shape)}")
        if wanted is not None and code_of(array) != wanted.get(name, "F32"):
            model = dtypes.get(name, "F32") if dtypes is not None else "F32"
            raise InvalidUpdateError(f"tensor {name!r} has dtype {code_of(array)}, expected {wanted.get(name, 'F32')} (the delta of a {model} tensor)")


def check_layout(update: Update, *, expected: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str] | None = None) -> None:
    """InvalidUpdateError unless an update decoded earlier (`decode_update`, whose value checks it
    passed) has exactly the `expected` names, shapes and delta dtypes of this model."""
    wanted = _delta_codes(dtypes)[0]
    # An all-F32 model: decode_update reads F32 only, so no other dtype gets this far from bytes.
    _check_layout(update.tensors, expected, dtypes, wanted if wanted is not None else dict.fromkeys(expected, "F32"))


def decode_update(
    data: bytes, *, expected: Mapping[str, tuple[int, ...]], max_bytes: int, dtypes: Mapping[str, str] | None = None
) -> Update:
    """Decode and validate an untrusted update against the model's keys, shapes and dtypes.

    Raises InvalidUpdateError unless `data` is valid safetensors of at most
    `max_bytes` whose tensors have exactly the `expected` names and shapes,
    each of the delta dtype of the model's dtype for it (`dtypes`, the base's
    safetensors codes by name; None: all F32), float deltas finite and within
    the fixed-point range, integer ones below 2**39 in magnitude, and whose
    metadata (if it names a format) is ``fedledger-update/1`` with a valid
    num_samples. Whether an integer delta keeps its value in range depends on
    the base: `check_integer_deltas`.
    """
    wanted, accept = _delta_codes(dtypes)
    tensors, metadata, values = read_safetensors_values(data, max_bytes, accept=accept)
    _check_layout(tensors, expected, dtypes, wanted)
    _check_values(tensors, InvalidUpdateError, values)
    if values is None:  # else every tensor is float32
        _check_deltas(tensors, InvalidUpdateError)
    if metadata.get("format", UPDATE_FORMAT) != UPDATE_FORMAT:
        raise InvalidUpdateError(f"unknown update format {metadata['format'][:40]!r}")
    return Update(tensors=tensors, num_samples=_parse_num_samples(metadata), metadata=metadata)


def check_integer_deltas(
    tensors: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray], dtypes: Mapping[str, str]
) -> None:
    """InvalidUpdateError unless every integer delta keeps its base value (int64) within the dtype's range.

    Then every rule's result stays in range too: each is a rounded weighted
    mean, median or trimmed mean of valid deltas (or a clipped one, between 0
    and it), so it lies between the smallest and largest of them.
    """
    for name, code in dtypes.items():
        if code in INT_RANGES and not integers_in_range(np.asarray(base[name]) + np.asarray(tensors[name]), code):
            low, high = INT_RANGES[code]
            raise InvalidUpdateError(f"integer delta {name!r} takes values out of the {code} range [{low}, {high}]")


def encode_model(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Write full model `weights` (any dtype of `dtypes.MODEL_DTYPES`) as a canonical safetensors file."""
    for name, array in weights.items():
        code = code_of(array)
        if code in FLOATS and not np.all(np.isfinite(np.asarray(array) if code != "BF16" else as_float32(array, code))):
            raise EncodeError(f"model tensor {name!r} has non-finite values")
        if code in INT_RANGES and not integers_in_range(array, code):
            raise EncodeError(f"model tensor {name!r} has values outside the {code} range {list(INT_RANGES[code])}")
    return write_safetensors(weights, metadata, accept=_MODEL_CODES)


def decode_model(data: bytes, max_bytes: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode a global model file into (weights, metadata).

    Raises InvalidModelError unless it is valid safetensors of the dtypes of
    `dtypes.MODEL_DTYPES` whose float values are finite and within the
    fixed-point range (it is the base of a round) and whose integer values lie
    in their dtype's range. A float32-only model decodes to float32 arrays, as
    it always did; a BF16 tensor decodes to a `dtypes.BFLOAT16` array.
    """
    try:
        weights, metadata, values = read_safetensors_values(data, max_bytes, accept=_MODEL_CODES)
    except InvalidUpdateError as exc:
        raise InvalidModelError(f"invalid model: {exc}") from exc
    _check_values(weights, InvalidModelError, values)
    if values is None:
        for name, array in weights.items():
            code = code_of(array)
            if code in INT_RANGES and not integers_in_range(array, code):
                raise InvalidModelError(f"model tensor {name!r} has values outside the {code} range {list(INT_RANGES[code])}")
    return weights, metadata
