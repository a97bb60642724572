"""Tensor dtypes beyond float32: how each is stored, carried in an update and aggregated.

A model file may hold, per tensor, one of the safetensors dtypes in `MODEL_DTYPES`.
What an update carries for it, and how the new value is made, depends only on
that dtype (docs/formats.md has the table):

* float parameters (F32, F16, BF16) travel as float32 deltas (float32 holds every
  float16 and bfloat16 value exactly) and are aggregated on the 2**-32
  fixed-point grid like float32 ones. The new value is rounded once, to nearest,
  ties to even, from the exact fixed-point integer straight to the parameter's
  own format (`from_fixed`): integer bit arithmetic, no float operation, so no
  double rounding through float32 and nothing a CPU could do differently.
* integer buffers (I64, I32, I16, I8, U8, BOOL; BatchNorm's
  ``num_batches_tracked`` is I64) travel as int64 deltas and are aggregated by
  the same rule on the integer grid (a weighted mean is rounded half to even to
  an integer, a median of two middle values likewise). A delta that would take
  the value out of its dtype's range is invalid, so every rule's result (a
  rounded convex combination of valid deltas, or 0) stays in range: nothing is
  clamped and nothing overflows. Integer tensors take no part in contribution
  scores, Multi-Krum distances or norm clipping: those measure the parameters.

numpy has no bfloat16: a BF16 tensor is an array of `BFLOAT16`, a two-byte
structured dtype whose numeric use fails loudly (an astype to float raises)
instead of silently reading the bit patterns as numbers.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from numpy.typing import NDArray

from aggregation.errors import AggregationError, EncodeError
from aggregation.fixedpoint import FRACTION_BITS, Q_BOUND, to_fixed, to_float32

BFLOAT16 = np.dtype([("bfloat16_low", "u1"), ("bfloat16_high", "u1")])

# safetensors code -> numpy dtype of a decoded tensor (native byte order).
MODEL_DTYPES: Mapping[str, np.dtype] = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": BFLOAT16,
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
FLOATS = frozenset({"F32", "F16", "BF16"})
# How the bytes of each code are laid out in a file (safetensors is little-endian).
FILE_DTYPES: Mapping[str, np.dtype] = {
    code: (dtype if dtype.itemsize == 1 or code == "BF16" else dtype.newbyteorder("<")) for code, dtype in MODEL_DTYPES.items()
}
ITEMSIZE: Mapping[str, int] = {code: dtype.itemsize for code, dtype in MODEL_DTYPES.items()}

# An update carries float32 deltas for float parameters and int64 for integer buffers.
DELTA_DTYPES: Mapping[str, str] = {code: "F32" if code in FLOATS else "I64" for code in MODEL_DTYPES}

# Integer deltas are fixed-point values of the integer grid: |d| < Q_BOUND, as float ones.
# Integer model values lie in their dtype's range; I64's is narrowed to |v| < 2**62 so
# that a value plus a delta never overflows int64 before it is checked.
INT_RANGES: Mapping[str, tuple[int, int]] = {
    "I64": (-(2**62) + 1, 2**62 - 1),
    "I32": (-(2**31), 2**31 - 1),
    "I16": (-(2**15), 2**15 - 1),
    "I8": (-(2**7), 2**7 - 1),
    "U8": (0, 2**8 - 1),
    "BOOL": (0, 1),
}

_BY_NUMPY = {dtype: code for code, dtype in MODEL_DTYPES.items()}


def code_of(array: np.ndarray) -> str:
    """The safetensors dtype code of `array`; EncodeError for a dtype the format does not carry."""
    code = _BY_NUMPY.get(np.asarray(array).dtype.newbyteorder("="))  # the file's byte order is the writer's business
    if code is None:
        raise EncodeError(f"dtype {np.asarray(array).dtype} is not carried; supported: {', '.join(MODEL_DTYPES)}")
    return code


def layout(weights: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Each tensor's safetensors dtype code, by name."""
    return {name: code_of(array) for name, array in weights.items()}


def bfloat16_bits(array: np.ndarray) -> NDArray[np.uint16]:
    """The bit patterns of a `BFLOAT16` array, as native uint16."""
    return np.asarray(array).view("<u2").astype(np.uint16)


def bfloat16_from_bits(bits: np.ndarray) -> NDArray[np.void]:
    """A `BFLOAT16` array holding the given uint16 bit patterns."""
    return np.ascontiguousarray(np.asarray(bits, dtype=np.uint16).astype("<u2")).view(BFLOAT16)


def as_float32(array: np.ndarray, code: str) -> NDArray[np.float32]:
    """A float tensor's values in float32: exact, every float16 and bfloat16 value is a float32 one."""
    if code == "BF16":
        # bfloat16 is the upper half of a float32: a shift, no rounding.
        return (bfloat16_bits(array).astype(np.uint32) << 16).view(np.float32)
    if code not in FLOATS:
        raise AggregationError(f"as_float32 takes a float tensor, got {code}")
    return np.asarray(array).astype(np.float32)


def integers_in_range(array: np.ndarray, code: str) -> bool:
    """Whether every value of an integer tensor lies in its dtype's (narrowed) range."""
    values = np.asarray(array)
    if not values.size:
        return True
    low, high = INT_RANGES[code]
    return bool(low <= int(values.min()) and int(values.max()) <= high)


def fixed_of(array: np.ndarray, code: str) -> NDArray[np.int64]:
    """A model tensor as int64 on its grid: fixed point (2**-32) for floats, the integers themselves otherwise."""
    if code == "F32":
        return to_fixed(np.asarray(array))
    if code in FLOATS:
        return to_fixed(as_float32(array, code))
    return np.asarray(array).astype(np.int64)


# (significand bits with the hidden one, least normal exponent, bias) per narrow float.
_FORMATS = {"F16": (11, -14, 15), "BF16": (8, -126, 127)}


def round_fixed(q: np.ndarray, code: str) -> NDArray[np.uint16]:
    """The F16 or BF16 bit patterns nearest to ``q * 2**-32``, ties to even, for int64 |q| < 2**40.

    Integer arithmetic only: the exponent is the bit length of |q|, the
    significand is |q| shifted right with the dropped bits deciding the
    rounding, and a carry out of the significand moves into the exponent field
    by plain addition (as it does into the normal range from a subnormal).
    |q * 2**-32| < 256 is far below either format's largest finite value.
    """
    precision, min_exponent, bias = _FORMATS[code]
    fixed = np.asarray(q, dtype=np.int64)
    if fixed.size and not (-(2**40) < int(fixed.min()) and int(fixed.max()) < 2**40):
        raise AggregationError("round_fixed: fixed-point values must satisfy |q| < 2**40")
    magnitude = np.abs(fixed)
    top = np.zeros_like(magnitude)  # floor(log2 |q|) by binary search; 0 for q == 0
    for step in (32, 16, 8, 4, 2, 1):
        top += ((magnitude >> (top + step)) != 0) * step
    exponent = np.maximum(top - FRACTION_BITS, min_exponent)  # of the value; subnormals share the least
    # The value's quantum is 2**(exponent - precision + 1); in units of 2**-32 that is 2**shift.
    shift = exponent - (precision - 1) + FRACTION_BITS
    right = np.maximum(shift, 0)
    floor = magnitude >> right
    remainder = magnitude - (floor << right)
    half = np.left_shift(np.int64(1), right) >> 1
    up = (remainder > half) | ((remainder == half) & (right > 0) & ((floor & 1) == 1))
    significand = (floor + up) << np.maximum(-shift, 0)
    bits = ((exponent + bias - 1) << (precision - 1)) + significand
    bits = np.where(magnitude == 0, 0, bits) | ((fixed < 0).astype(np.int64) << 15)
    return bits.astype(np.uint16)


def from_fixed(q: np.ndarray, code: str) -> np.ndarray:
    """A new model tensor of dtype `code` from its exact int64 value on the tensor's grid."""
    if code == "F32":
        return to_float32(q)
    if code == "F16":
        return round_fixed(q, code).view(np.float16)
    if code == "BF16":
        return bfloat16_from_bits(round_fixed(q, code))
    fixed = np.asarray(q, dtype=np.int64)
    if not integers_in_range(fixed, code):
        # Unreachable for validated deltas (see the module docstring); a bug, not an input.
        raise AggregationError(f"integer values out of the {code} range")
    return fixed.astype(MODEL_DTYPES[code])


def model_delta(trained: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The update a sender publishes: per tensor, trained minus base in its delta dtype.

    Float parameters: the float32 difference of the exact float32 values (one
    IEEE rounding; for float16 exact unless one value is below 2**-6 in
    magnitude and the other more than 2**13 times larger). Integer buffers:
    the exact int64 difference.
    """
    delta: dict[str, np.ndarray] = {}
    for name, before in base.items():
        code = code_of(before)
        after = trained[name]
        if code_of(after) != code or np.shape(after) != np.shape(before):
            raise EncodeError(f"tensor {name!r}: trained {code_of(after)} {list(np.shape(after))} does not match the base {code} {list(np.shape(before))}")
        if code in FLOATS:
            delta[name] = np.asarray(as_float32(after, code) - as_float32(before, code))
        else:
            delta[name] = np.asarray(np.asarray(after).astype(np.int64) - np.asarray(before).astype(np.int64))
    return delta


def deltas_in_range(delta: np.ndarray) -> bool:
    """Whether every int64 delta satisfies |d| < Q_BOUND, the bound the rules assume."""
    values = np.asarray(delta)
    return not values.size or bool(-Q_BOUND < int(values.min()) and int(values.max()) < Q_BOUND)
