"""Exact integer fixed-point arithmetic for deterministic aggregation.

SPEC section 5 requires byte-identical results on any CPU, SIMD level, thread
count and library version. Float sums cannot promise that (their result
depends on summation order, which vectorized and threaded kernels change), so
floats are used only at the edges:

* ``to_fixed``: a float32 x becomes the int64 ``q = rint(x * 2**32)``. The
  float32 -> float64 cast and the multiplication by a power of two are exact,
  and ``np.rint`` is the IEEE round-half-to-even operation, so q is the same
  everywhere. |x| < 128 is required, hence |q| < 2**39.
* ``to_float32``: ``q * 2**-32`` is exact in float64 for |q| < 2**53; the single
  rounding to float32 is again IEEE round-to-nearest-even.

Everything in between is integer arithmetic whose intermediate values are
bounded so int64 never overflows, which makes it associative: any order
of evaluation (and any numpy kernel) gives the same bits.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from aggregation.errors import AggregationError, FixedPointRangeError, WeightOverflowError

FRACTION_BITS = 32
# Floats must satisfy |x| < VALUE_BOUND, so fixed values satisfy |q| < Q_BOUND.
VALUE_BOUND = 128.0
Q_BOUND = 2**39

# weighted_mean splits q = h * 2**SPLIT_BITS + l with 0 <= l < 2**SPLIT_BITS so
# the per-coordinate sums stay below 2**63 for any total weight < MAX_TOTAL_WEIGHT
# (the remainder step needs W * 2**21 < 2**63; see weighted_mean).
SPLIT_BITS = 20
MAX_TOTAL_WEIGHT = 2**42

# exact_dot accepts |q| < DOT_BOUND (a base plus a delta is < 2**40), so its
# split parts are < 2**20 in magnitude, each product < 2**40, and a chunk of
# DOT_CHUNK products sums to < 2**62.
DOT_BOUND = 2**40
DOT_CHUNK = 2**22

_LOW_MASK = (1 << SPLIT_BITS) - 1


def in_range(array: np.ndarray) -> bool:
    """Whether every value of float `array` is finite with |x| < VALUE_BOUND."""
    values = np.asarray(array, dtype=np.float64)
    # abs(NaN) < bound is False, and so is abs(inf) < bound: one test covers both.
    return bool(np.all(np.abs(values) < VALUE_BOUND))


def to_fixed(array: np.ndarray) -> NDArray[np.int64]:
    """Convert a float32 array to fixed point: ``rint(x * 2**32)`` as int64 (exact, deterministic)."""
    values = np.asarray(array)
    if values.dtype != np.float32:
        raise FixedPointRangeError(f"to_fixed expects float32, got {values.dtype}")
    wide = values.astype(np.float64)
    if not in_range(wide):
        raise FixedPointRangeError(f"values must be finite with |x| < {VALUE_BOUND:g}")
    return np.rint(np.ldexp(wide, FRACTION_BITS)).astype(np.int64)


def to_float32(q: np.ndarray) -> NDArray[np.float32]:
    """Convert fixed-point int64 values back to float32 with one IEEE rounding."""
    fixed = _as_int64(q, "to_float32")
    if fixed.size and not (np.all(fixed < 2**53) and np.all(fixed > -(2**53))):
        raise FixedPointRangeError("fixed-point values must satisfy |q| < 2**53 to convert exactly")
    return np.ldexp(fixed.astype(np.float64), -FRACTION_BITS).astype(np.float32)


def _as_int64(q: np.ndarray, where: str) -> NDArray[np.int64]:
    fixed = np.asarray(q)
    if fixed.dtype != np.int64:
        raise AggregationError(f"{where} expects int64 fixed-point values, got {fixed.dtype}")
    return fixed


def _check_bound(q: NDArray[np.int64], bound: int, where: str) -> None:
    # Written as two comparisons: np.abs(int64 min) overflows back to negative.
    if q.size and not (np.all(q < bound) and np.all(q > -bound)):
        raise FixedPointRangeError(f"{where}: fixed-point values must satisfy |q| < 2**{bound.bit_length() - 1}")


def weighted_mean(qs: Sequence[np.ndarray], weights: Sequence[int]) -> NDArray[np.int64]:
    """Exact ``sum(w_i * q_i) / sum(w)`` per coordinate, rounded half to even.

    Each q_i is an int64 array with |q| < 2**39 (all of one shape) and each
    weight a positive integer; the total weight must be < 2**42.
    """
    if len(qs) != len(weights) or not qs:
        raise AggregationError(f"weighted_mean needs one weight per array and at least one array, got {len(qs)} and {len(weights)}")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0:
            raise WeightOverflowError(f"weights must be positive integers, got {w!r}")
    total = sum(int(w) for w in weights)
    if total >= MAX_TOTAL_WEIGHT:
        raise WeightOverflowError(f"total weight {total} is not below 2**42; cap the sample counts")
    shape = np.shape(qs[0])
    # Split every q into h * 2**20 + l (arithmetic shift floors, so 0 <= l < 2**20
    # and |h| <= 2**19). Then |sum w*h| <= W * 2**19 and 0 <= sum w*l < W * 2**20:
    # both fit int64 for W < 2**42, where a plain sum of w*q would need W < 2**24.
    high = np.zeros(shape, dtype=np.int64)
    low = np.zeros(shape, dtype=np.int64)
    for q, w in zip(qs, weights):
        fixed = _as_int64(q, "weighted_mean")
        if fixed.shape != shape:
            raise AggregationError(f"weighted_mean arrays differ in shape: {fixed.shape} != {shape}")
        _check_bound(fixed, Q_BOUND, "weighted_mean")
        weight = np.int64(w)
        high += (fixed >> SPLIT_BITS) * weight
        low += (fixed & _LOW_MASK) * weight
    w_total = np.int64(total)
    # sum(w*q) = high * 2**20 + low. With high = qh * W + rh (floor division,
    # 0 <= rh < W): floor(sum / W) = qh * 2**20 + floor((rh * 2**20 + low) / W),
    # and rh * 2**20 + low < 2 * W * 2**20 < 2**63.
    q_high, r_high = np.divmod(high, w_total)
    q_rest, remainder = np.divmod((r_high << SPLIT_BITS) + low, w_total)
    mean = (q_high << SPLIT_BITS) + q_rest
    # Round half to even on the exact remainder (0 <= remainder < W):
    # up when remainder > W/2, or exactly W/2 and the floor is odd.
    twice = remainder * 2
    round_up = (twice > w_total) | ((twice == w_total) & ((mean & 1) == 1))
    return mean + round_up.astype(np.int64)


def exact_dot(a: np.ndarray, b: np.ndarray) -> int:
    """Exact dot product of two int64 fixed-point arrays (|q| < 2**40) as a Python int.

    Each value is split into q = h * 2**20 + l with 0 <= l < 2**20; the four
    partial dot products are computed in int64 over chunks small enough that no
    chunk sum can overflow, and combined in Python integers.
    """
    left = _as_int64(a, "exact_dot").reshape(-1)
    right = _as_int64(b, "exact_dot").reshape(-1)
    if left.shape != right.shape:
        raise AggregationError(f"exact_dot arrays differ in size: {left.size} != {right.size}")
    _check_bound(left, DOT_BOUND, "exact_dot")
    _check_bound(right, DOT_BOUND, "exact_dot")
    high_high = high_low = low_low = 0
    for start in range(0, left.size, DOT_CHUNK):
        x = left[start : start + DOT_CHUNK]
        y = right[start : start + DOT_CHUNK]
        xh, xl = x >> SPLIT_BITS, x & _LOW_MASK
        yh, yl = y >> SPLIT_BITS, y & _LOW_MASK
        # Integer dot products: no BLAS, and with no overflow the sum is exact
        # whatever order the kernel adds in.
        high_high += int(np.dot(xh, yh))
        high_low += int(np.dot(xh, yl)) + int(np.dot(xl, yh))
        low_low += int(np.dot(xl, yl))
    return (high_high << (2 * SPLIT_BITS)) + (high_low << SPLIT_BITS) + low_low
