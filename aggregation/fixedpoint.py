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

import contextlib
from typing import ContextManager, Iterator, Sequence

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

# weighted_mean adds w * q directly when sum(w) * max|q| stays below this, and
# splits otherwise; both paths give the same integers.
_DIRECT_SUM_BOUND = 2**62

# The coordinate-wise rules sum up to n values with |q| < 2**39; n below
# MAX_UPDATES keeps every such sum below 2**59.
MAX_UPDATES = 2**20

# sorted_columns sorts this many coordinates at a time: a (chunk, n) block of
# int64 stays in cache and each coordinate's n values are contiguous.
SORT_CHUNK = 2**14

# exact_gram multiplies float64 limb matrices; a chunk is this many
# coordinates wide (more for n < 8: memory is 2n * chunk * 8 bytes), and
# fewer when the values are large (see exact_gram).
GRAM_CHUNK = 2**13

# clip scales by factor / 2**SCALE_BITS with 0 <= factor < 2**SCALE_BITS.
SCALE_BITS = 40


def in_range(array: np.ndarray) -> bool:
    """Whether every value of float `array` is finite with |x| < VALUE_BOUND."""
    values = np.asarray(array)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if not values.size:
        return True
    # min and max propagate NaN, and NaN or inf fails the comparisons: two
    # reductions, no temporary array. The bound is exact in float32 too.
    return bool(-VALUE_BOUND < values.min() and values.max() < VALUE_BOUND)


def to_fixed(array: np.ndarray) -> NDArray[np.int64]:
    """Convert a float32 array to fixed point: ``rint(x * 2**32)`` as int64 (exact, deterministic)."""
    values = np.asarray(array)
    if values.dtype != np.float32:
        raise FixedPointRangeError(f"to_fixed expects float32, got {values.dtype}")
    if not in_range(values):
        raise FixedPointRangeError(f"values must be finite with |x| < {VALUE_BOUND:g}")
    # All in float32, half the memory traffic of float64 and the same result:
    # the product by 2**32 is exact (scaling by a power of two: subnormals
    # become normal, |x| < 128 stays far below float32's range), rint is IEEE
    # round-half-to-even and exact on a float32, and its integer result is
    # below 2**39, so the cast to int64 is exact.
    scaled = np.multiply(values, np.float32(2.0**FRACTION_BITS))
    np.rint(scaled, out=scaled)
    return scaled.astype(np.int64)


def to_float32(q: np.ndarray) -> NDArray[np.float32]:
    """Convert fixed-point int64 values back to float32 with one IEEE rounding."""
    fixed = _as_int64(q, "to_float32")
    if fixed.size and not (-(2**53) < int(fixed.min()) and int(fixed.max()) < 2**53):
        raise FixedPointRangeError("fixed-point values must satisfy |q| < 2**53 to convert exactly")
    # The int64 -> float64 cast is exact below 2**53, and so is the product by
    # a power of two (no result is subnormal): one rounding, to float32.
    return np.multiply(fixed, 2.0**-FRACTION_BITS, dtype=np.float64).astype(np.float32)


def _as_int64(q: np.ndarray, where: str) -> NDArray[np.int64]:
    fixed = np.asarray(q)
    if fixed.dtype != np.int64:
        raise AggregationError(f"{where} expects int64 fixed-point values, got {fixed.dtype}")
    return fixed


def _check_bound(q: NDArray[np.int64], bound: int, where: str) -> None:
    # Written as two comparisons: np.abs(int64 min) overflows back to negative.
    if q.size and not (np.all(q < bound) and np.all(q > -bound)):
        raise FixedPointRangeError(f"{where}: fixed-point values must satisfy |q| < 2**{bound.bit_length() - 1}")


def _round_half_even(floor: NDArray[np.int64], remainder: NDArray[np.int64], divisor: int) -> NDArray[np.int64]:
    # floor + remainder / divisor (0 <= remainder < divisor) to the nearest
    # integer, ties to even: up when remainder > divisor / 2, or exactly half
    # and the floor is odd.
    twice = remainder * 2
    d = np.int64(divisor)
    round_up = (twice > d) | ((twice == d) & ((floor & 1) == 1))
    return floor + round_up.astype(np.int64)


def div_round_half_even(total: np.ndarray, divisor: int) -> NDArray[np.int64]:
    """Exact ``total / divisor`` per coordinate, rounded half to even.

    `total` is int64 with |total| < 2**62 and `divisor` a positive integer
    below 2**61 (so twice the remainder cannot overflow).
    """
    values = _as_int64(total, "div_round_half_even")
    if isinstance(divisor, bool) or not isinstance(divisor, (int, np.integer)) or not 0 < divisor < 2**61:
        raise AggregationError(f"divisor must be an integer in [1, 2**61), got {divisor!r}")
    divisor = int(divisor)
    if divisor == 1:
        return values.copy()
    if divisor & (divisor - 1) == 0:
        # A power of two: the arithmetic shift is floor division, the mask its remainder.
        shift = divisor.bit_length() - 1
        return _round_half_even(values >> shift, values & (divisor - 1), divisor)
    floor, remainder = np.divmod(values, np.int64(divisor))
    return _round_half_even(floor, remainder, divisor)


def _max_magnitude(q: NDArray[np.int64], bound: int, where: str) -> int:
    # One min and one max reduction both check the bound and give max|q|.
    if not q.size:
        return 0
    low, high = int(q.min()), int(q.max())
    if high >= bound or low <= -bound:
        raise FixedPointRangeError(f"{where}: fixed-point values must satisfy |q| < 2**{bound.bit_length() - 1}")
    return max(high, -low)


def _direct_weighted_mean(qs: Sequence[NDArray[np.int64]], weights: Sequence[int]) -> NDArray[np.int64]:
    # One compiled pass per input (aggregation.kernels): range check, multiply
    # and add on a cache-sized block of the accumulator at a time.
    from aggregation.kernels import weighted_mean_i64

    mean, in_range = weighted_mean_i64(qs, weights, Q_BOUND)
    if not in_range:
        raise FixedPointRangeError(f"weighted_mean: fixed-point values must satisfy |q| < 2**{Q_BOUND.bit_length() - 1}")
    return mean.reshape(np.shape(qs[0]))


def _check_weights(weights: Sequence[int]) -> int:
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0:
            raise WeightOverflowError(f"weights must be positive integers, got {w!r}")
    total = sum(int(w) for w in weights)
    if total >= MAX_TOTAL_WEIGHT:
        raise WeightOverflowError(f"total weight {total} is not below 2**42; cap the sample counts")
    return total


def weighted_mean_float32(xs: Sequence[np.ndarray], weights: Sequence[int], *, threads: int | None = None) -> NDArray[np.int64]:
    """``weighted_mean([to_fixed(x) for x in xs], weights)``, without the int64 copies.

    Each x is a float32 array (all of one shape) with finite values, |x| < 128
    (FixedPointRangeError otherwise). The fixed-point values are computed on
    the fly, block by block, so the inputs are read once, as float32: the
    result is the same integers as converting first.
    """
    if len(xs) != len(weights) or not xs:
        raise AggregationError(f"weighted_mean needs one weight per array and at least one array, got {len(xs)} and {len(weights)}")
    total = _check_weights(weights)
    shape = np.shape(xs[0])
    for x in xs:
        if np.asarray(x).dtype != np.float32:
            raise FixedPointRangeError(f"weighted_mean_float32 expects float32, got {np.asarray(x).dtype}")
        if np.shape(x) != shape:
            raise AggregationError(f"weighted_mean arrays differ in shape: {np.shape(x)} != {shape}")
    if total * Q_BOUND > _DIRECT_SUM_BOUND:
        return weighted_mean([to_fixed(np.asarray(x)) for x in xs], weights)
    from aggregation.kernels import weighted_mean_f32

    mean, in_range = weighted_mean_f32(xs, weights, threads=threads)
    if not in_range:
        raise FixedPointRangeError(f"values must be finite with |x| < {VALUE_BOUND:g}")
    return mean.reshape(shape)


def weighted_mean(qs: Sequence[np.ndarray], weights: Sequence[int]) -> NDArray[np.int64]:
    """Exact ``sum(w_i * q_i) / sum(w)`` per coordinate, rounded half to even.

    Each q_i is an int64 array with |q| < 2**39 (all of one shape) and each
    weight a positive integer; the total weight must be < 2**42.
    """
    if len(qs) != len(weights) or not qs:
        raise AggregationError(f"weighted_mean needs one weight per array and at least one array, got {len(qs)} and {len(weights)}")
    total = _check_weights(weights)
    shape = np.shape(qs[0])
    fixed_qs: list[NDArray[np.int64]] = []
    for q in qs:
        fixed = _as_int64(q, "weighted_mean")
        if fixed.shape != shape:
            raise AggregationError(f"weighted_mean arrays differ in shape: {fixed.shape} != {shape}")
        fixed_qs.append(fixed)
    if total * Q_BOUND <= _DIRECT_SUM_BOUND:
        # |sum w*q| < W * 2**39 <= 2**62: the plain int64 sum cannot overflow,
        # so it is exact and the same in any order. Real rounds (total weight
        # below 2**23) take this path; the bound is checked chunk by chunk.
        return _direct_weighted_mean(fixed_qs, weights)
    magnitude = max(_max_magnitude(q, Q_BOUND, "weighted_mean") for q in fixed_qs)
    if total * magnitude < _DIRECT_SUM_BOUND:
        return _direct_weighted_mean(fixed_qs, weights)
    # Split every q into h * 2**20 + l (arithmetic shift floors, so 0 <= l < 2**20
    # and |h| <= 2**19). Then |sum w*h| <= W * 2**19 and 0 <= sum w*l < W * 2**20:
    # both fit int64 for W < 2**42, where a plain sum of w*q would need W < 2**24.
    high = np.zeros(shape, dtype=np.int64)
    low = np.zeros(shape, dtype=np.int64)
    for fixed, w in zip(fixed_qs, weights):
        weight = np.int64(w)
        high += (fixed >> SPLIT_BITS) * weight
        low += (fixed & _LOW_MASK) * weight
    w_total = np.int64(total)
    # sum(w*q) = high * 2**20 + low. With high = qh * W + rh (floor division,
    # 0 <= rh < W): floor(sum / W) = qh * 2**20 + floor((rh * 2**20 + low) / W),
    # and rh * 2**20 + low < 2 * W * 2**20 < 2**63.
    q_high, r_high = np.divmod(high, w_total)
    q_rest, remainder = np.divmod((r_high << SPLIT_BITS) + low, w_total)
    return _round_half_even((q_high << SPLIT_BITS) + q_rest, remainder, total)


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


def sorted_columns(qs: Sequence[np.ndarray]) -> Iterator[tuple[slice, NDArray[np.int64]]]:
    """Yield ``(coords, block)`` with ``block[k]`` the values of coordinate ``coords.start + k``, ascending.

    `qs` are n flat int64 arrays of one size; ``block`` has shape (len, n) and
    is reused between steps. Sorting integers has exactly one result, so any
    sort kernel (SIMD or not) gives the same blocks: this is what the
    coordinate-wise rules (median, trimmed mean) build on.
    """
    arrays = [_as_int64(q, "sorted_columns").reshape(-1) for q in qs]
    if not 0 < len(arrays) <= MAX_UPDATES:
        raise AggregationError(f"sorted_columns needs 1 to 2**20 arrays, got {len(arrays)}")
    size = arrays[0].size
    if any(a.size != size for a in arrays):
        raise AggregationError("sorted_columns arrays differ in size")
    buffer = np.empty((min(SORT_CHUNK, size), len(arrays)), dtype=np.int64)
    for start in range(0, size, SORT_CHUNK):
        stop = min(size, start + SORT_CHUNK)
        block = buffer[: stop - start]
        for i, a in enumerate(arrays):
            block[:, i] = a[start:stop]
        block.sort(axis=1)
        yield slice(start, stop), block


def exact_gram(rows: Sequence[Sequence[np.ndarray]]) -> list[list[int]]:
    """Exact Gram matrix of n vectors, ``G[i][j] = <rows[i], rows[j]>``, in Python ints.

    Each row is a sequence of int64 parts (e.g. a model's tensors) with the
    same sizes in every row, |q| < 2**40; the vector is their concatenation.

    The products run in float64 BLAS, which is fast, and exact here: every
    value is split into limbs q = h * 2**s + l (0 <= l < 2**s, |h| <= 2**s,
    s = ceil(bits(max|q|) / 2)) and a chunk of c = 2**(52 - 2s) coordinates at
    a time is multiplied, so every partial sum of every kernel, in any order
    and with or without FMA, is an integer below 2**52 in magnitude: float64
    represents it exactly, whatever the thread count or SIMD level.
    """
    n = len(rows)
    if n == 0:
        raise AggregationError("exact_gram needs at least one vector")
    parts = [[_as_int64(p, "exact_gram").reshape(-1) for p in row] for row in rows]
    sizes = [p.size for p in parts[0]]
    if any([p.size for p in row] != sizes for row in parts):
        raise AggregationError("exact_gram vectors differ in their parts' sizes")
    magnitude = max((_max_magnitude(p, DOT_BOUND, "exact_gram") for row in parts for p in row), default=0)
    split = max(1, (magnitude.bit_length() + 1) // 2)
    # Wider chunks for few vectors: the limb matrix stays ~1 MiB either way.
    chunk = min(max(GRAM_CHUNK, 2**16 // n), 2 ** (52 - 2 * split))
    total = [[0] * (2 * n) for _ in range(2 * n)]
    acc = np.zeros((2 * n, 2 * n), dtype=np.int64)
    limbs = np.empty((2 * n, chunk), dtype=np.float64)
    with _one_blas_thread():
        _gram_chunks(parts, sizes, split, chunk, limbs, acc, total)
    return [
        [
            (total[i][j] << (2 * split)) + ((total[i][n + j] + total[n + i][j]) << split) + total[n + i][n + j]
            for j in range(n)
        ]
        for i in range(n)
    ]


def _gram_chunks(
    parts: list[list[NDArray[np.int64]]],
    sizes: list[int],
    split: int,
    chunk: int,
    limbs: NDArray[np.float64],
    acc: NDArray[np.int64],
    total: list[list[int]],
) -> None:
    n = len(parts)
    mask = np.int64((1 << split) - 1)
    # Each chunk adds at most 2**52 per entry; flushing to Python ints every
    # 2**10 chunks keeps the int64 accumulator below 2**62.
    flush_every = 2**10
    pending = 0
    for p, size in enumerate(sizes):
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            # Limb matrix [H; L] (2n x width), built in cache straight from the
            # inputs; its Gram holds the blocks HH, HL, LH and LL.
            stacked = limbs[:, : stop - start]
            for i in range(n):
                values = parts[i][p][start:stop]
                np.right_shift(values, split, out=stacked[i], casting="unsafe")
                np.bitwise_and(values, mask, out=stacked[n + i], casting="unsafe")
            acc += (stacked @ stacked.T).astype(np.int64)
            pending += 1
            if pending == flush_every:
                _flush(total, acc)
                pending = 0
    _flush(total, acc)


_blas_controller: object | None = None


def _one_blas_thread() -> ContextManager[object]:
    # exact_gram's products are exact with any thread count; this is for
    # speed only. OpenBLAS's threaded syrk on these thin matrices is no faster
    # than one thread on an idle machine and up to 10x slower on a busy one
    # (measured: 64 x 8192 limbs, 2 CPUs under load). threadpoolctl comes
    # with scikit-learn; without it the BLAS keeps its own setting.
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return contextlib.nullcontext()
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")  # type: ignore[attr-defined]


def _flush(total: list[list[int]], acc: NDArray[np.int64]) -> None:
    for i, row in enumerate(acc.tolist()):
        target = total[i]
        for j, value in enumerate(row):
            target[j] += value
    acc[:] = 0


def scale_toward_zero(q: np.ndarray, factor: int) -> NDArray[np.int64]:
    """``trunc(q * factor / 2**SCALE_BITS)`` exactly, for |q| < 2**40 and 0 <= factor < 2**SCALE_BITS.

    Truncation never increases a magnitude, so a scaled vector is never
    longer than ``factor / 2**SCALE_BITS`` times the original.
    """
    fixed = _as_int64(q, "scale_toward_zero")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 0 <= factor < 2**SCALE_BITS:
        raise AggregationError(f"factor must be an integer in [0, 2**{SCALE_BITS}), got {factor!r}")
    _check_bound(fixed, DOT_BOUND, "scale_toward_zero")
    magnitude = np.abs(fixed)
    f = np.int64(factor)
    # |q| * factor = (h * factor) * 2**20 + l * factor with h < 2**20, l < 2**20:
    # both products < 2**60. floor((A * 2**20 + B) / 2**40) = floor((A + floor(B / 2**20)) / 2**20).
    scaled = ((magnitude >> SPLIT_BITS) * f + (((magnitude & _LOW_MASK) * f) >> SPLIT_BITS)) >> (SCALE_BITS - SPLIT_BITS)
    return np.where(fixed < 0, -scaled, scaled)
