"""Compiled kernels for the exact weighted sum, the heart of FedAvg.

``sum_i w_i * q_i`` per coordinate, in int64, where q_i is either an int64
fixed-point array or computed on the fly from a float32 array as
``rint(x * 2**32)`` (exactly `fixedpoint.to_fixed`). One pass reads each input
once, checks its range, converts it and adds it, on a cache-sized block of
the accumulator at a time; numpy needs four or five passes and, from float32,
an int64 copy of every update. The arithmetic is the same integers as the
numpy code in `fixedpoint`: no float result is ever rounded (the product by
2**32 is exact, rint is IEEE round-half-to-even, and the int64 sums stay below
2**62 because callers keep the total weight below 2**23), so the kernel's
instruction choice, SIMD width and thread count cannot change a bit.

The coordinates are split into one contiguous range per thread; each thread
runs the compiled kernel without the GIL on its own range.

numba compiles the kernels on first use and caches the machine code next to
this file (`__pycache__`), so only a process on a fresh checkout pays the
second or so of compilation.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.typed import List as TypedList
from numpy.typing import NDArray

from aggregation.errors import AggregationError

# Floats: |x| < 128 and finite <=> the bits without the sign are below those
# of 128.0 (0x43000000); NaN and inf have larger bit patterns than any finite.
_F32_BOUND_BITS = 0x43000000
_F32_ABS_MASK = np.uint32(0x7FFFFFFF)
_SCALE = np.float32(2.0**32)

# Coordinates per block: a block of the int64 accumulator (128 KiB) and one
# input's slice stay in the core's L2 while every input is added to it.
BLOCK = 2**14

# A thread is worth starting for this many coordinates or more.
_MIN_PER_THREAD = 2**16
_MAX_THREADS = 8


@njit(nogil=True, cache=True, boundscheck=False)
def _add_f32(x, bits, weight, acc):  # type: ignore[no-untyped-def]
    # acc += weight * rint(x * 2**32); returns the largest |x| bit pattern seen.
    worst = np.uint32(0)
    for j in range(x.size):
        b = bits[j] & _F32_ABS_MASK
        worst = b if b > worst else worst
        acc[j] += np.int64(np.rint(x[j] * _SCALE)) * weight
    return worst


@njit(nogil=True, cache=True, boundscheck=False)
def _add_i64(q, weight, acc):  # type: ignore[no-untyped-def]
    # acc += weight * q; returns (min q, max q) for the caller's range check.
    low = np.int64(0)
    high = np.int64(0)
    for j in range(q.size):
        v = q[j]
        low = v if v < low else low
        high = v if v > high else high
        acc[j] += v * weight
    return low, high


@njit(nogil=True, cache=True, boundscheck=False)
def _divide(part, total):  # type: ignore[no-untyped-def]
    # part[j] = sum / total rounded half to even, exactly. The float quotient
    # is only a first guess: for |sum / total| < 2**39 it is within 2**-13 of
    # the true quotient, so its floor is off by at most one, and the integer
    # remainder puts it right. Two guesses can never give two answers.
    divisor = np.float64(total)
    for j in range(part.size):
        s = part[j]
        g = np.int64(np.floor(np.float64(s) / divisor))
        r = s - g * total
        below = np.int64(r < 0)
        g -= below
        r += below * total
        above = np.int64(r >= total)
        g += above
        r -= above * total
        twice = 2 * r
        part[j] = g + np.int64((twice > total) | ((twice == total) & ((g & 1) == 1)))


@njit(nogil=True, cache=True, boundscheck=False)
def _range_f32(xs, weights, total, out, start, stop, block):  # type: ignore[no-untyped-def]
    worst = np.uint32(0)
    for lo in range(start, stop, block):
        hi = min(stop, lo + block)
        part = out[lo:hi]
        part[:] = 0
        for k in range(len(xs)):
            x = xs[k][lo:hi]
            b = _add_f32(x, x.view(np.uint32), weights[k], part)
            worst = b if b > worst else worst
        _divide(part, total)
    return worst


@njit(nogil=True, cache=True, boundscheck=False)
def _range_i64(qs, weights, total, out, start, stop, block):  # type: ignore[no-untyped-def]
    low = np.int64(0)
    high = np.int64(0)
    for lo in range(start, stop, block):
        hi = min(stop, lo + block)
        part = out[lo:hi]
        part[:] = 0
        for k in range(len(qs)):
            a, b = _add_i64(qs[k][lo:hi], weights[k], part)
            low = a if a < low else low
            high = b if b > high else high
        _divide(part, total)
    return low, high


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def available_threads() -> int:
    """The kernels' thread count: $FEDLEDGER_THREADS if set, else the CPUs this process may use (at most 8)."""
    setting = os.environ.get("FEDLEDGER_THREADS", "").strip()
    if setting:
        try:
            return max(1, min(_MAX_THREADS, int(setting)))
        except ValueError:
            raise ValueError(f"FEDLEDGER_THREADS must be a positive integer, got {setting!r}") from None
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, count))


def _forget_pool() -> None:
    # A forked child inherits the executor but not its threads: work sent to
    # it would never run. The child starts a pool of its own when it needs one.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_MAX_THREADS, thread_name_prefix="fedledger-sum")
        return _pool


def _ranges(size: int, threads: int) -> list[tuple[int, int]]:
    # Contiguous ranges on block boundaries, one per thread.
    parts = max(1, min(threads, size // _MIN_PER_THREAD))
    blocks = -(-size // BLOCK)
    bounds = [min(size, (blocks * i // parts) * BLOCK) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


def _run(kernel, arrays: list[np.ndarray], weights: Sequence[int], threads: int | None):  # type: ignore[no-untyped-def]
    typed = TypedList(arrays)
    w = np.array([int(v) for v in weights], dtype=np.int64)
    total = int(w.sum())
    size = arrays[0].size
    out = np.empty(size, dtype=np.int64)
    ranges = _ranges(size, available_threads() if threads is None else max(1, threads))
    if len(ranges) <= 1:
        return out, [kernel(typed, w, total, out, 0, size, BLOCK)]
    futures = [_executor().submit(kernel, typed, w, total, out, lo, hi, BLOCK) for lo, hi in ranges]
    return out, [f.result() for f in futures]


def weighted_mean_f32(xs: Sequence[np.ndarray], weights: Sequence[int], *, threads: int | None = None) -> tuple[NDArray[np.int64], bool]:
    """``(mean, in_range)``: the exact ``sum_i w_i * rint(x_i * 2**32) / sum(w)`` of flat float32 arrays.

    The mean is rounded half to even, as `fixedpoint.div_round_half_even`.
    `in_range` is False when some value is non-finite or |x| >= 128; the mean
    is then meaningless. The caller keeps ``sum(weights) <= 2**23``.
    """
    arrays = [np.ascontiguousarray(x, dtype=np.float32).reshape(-1) for x in xs]
    out, worst = _run(_range_f32, arrays, weights, threads)
    return out, all(int(b) < _F32_BOUND_BITS for b in worst)


def weighted_mean_i64(
    qs: Sequence[np.ndarray], weights: Sequence[int], bound: int, *, threads: int | None = None
) -> tuple[NDArray[np.int64], bool]:
    """``(mean, in_range)``: the exact ``sum_i w_i * q_i / sum(w)`` of flat int64 arrays, rounded half to even.

    `in_range` is False when some |q| >= `bound` (<= 2**39); the mean is then
    meaningless. The caller keeps ``sum(weights) * bound <= 2**62``.
    """
    arrays = [np.ascontiguousarray(q, dtype=np.int64).reshape(-1) for q in qs]
    out, extremes = _run(_range_i64, arrays, weights, threads)
    return out, all(-bound < int(low) and int(high) < bound for low, high in extremes)


# --- exact dot products for the scores -------------------------------------------------

# Values are split as q = h * 2**20 + l (0 <= l < 2**20); with |q| < 2**40 every
# limb product is below 2**41 in magnitude, so DOT_CHUNK of them sum below 2**62.
_SPLIT = 20
_LOW = (1 << _SPLIT) - 1
DOT_CHUNK = 2**21


def _fixed(v):  # type: ignore[no-untyped-def]
    """One value's fixed-point integer inside a kernel: a float32 is converted as `to_fixed` does."""
    raise NotImplementedError  # pragma: no cover - only called from compiled code


def _valid(v):  # type: ignore[no-untyped-def]
    """Inside a kernel: False for a float that is not finite with |x| < 128 (`to_fixed` refuses it)."""
    raise NotImplementedError  # pragma: no cover - only called from compiled code


@overload(_fixed)
def _fixed_of(v):  # type: ignore[no-untyped-def]
    if isinstance(v, types.Float):
        return lambda v: np.int64(np.rint(v * _SCALE))
    return lambda v: np.int64(v)


@overload(_valid)
def _valid_of(v):  # type: ignore[no-untyped-def]
    if isinstance(v, types.Float):
        return lambda v: abs(v) < np.float32(128.0)  # False for NaN
    return lambda v: True


@njit(nogil=True, cache=True, boundscheck=False)
def _limb_sums(u, a):  # type: ignore[no-untyped-def]
    # Limb sums of <u, a> and <u, u> over one chunk, u's extremes and whether
    # every float of u and a was in range. u and a are int64 fixed-point values
    # or float32 ones, converted on the fly (numba compiles one kernel per pair
    # of types): the int64 copies of float updates are never made.
    hh = np.int64(0)
    hl = np.int64(0)
    ll = np.int64(0)
    sh = np.int64(0)
    sx = np.int64(0)
    sl = np.int64(0)
    low = np.int64(0)
    high = np.int64(0)
    valid = True
    for j in range(u.size):
        valid &= _valid(u[j]) & _valid(a[j])
        v = _fixed(u[j])
        w = _fixed(a[j])
        low = v if v < low else low
        high = v if v > high else high
        h = v >> 20
        lo = v & 0xFFFFF
        wh = w >> 20
        wl = w & 0xFFFFF
        hh += h * wh
        hl += h * wl + lo * wh
        ll += lo * wl
        sh += h * h
        sx += h * lo
        sl += lo * lo
    return hh, hl, ll, sh, sx, sl, low, high, valid


def _dots_of_one(parts: Sequence[np.ndarray], aggregate: Sequence[np.ndarray]) -> tuple[int, int, int, int, bool]:
    dot = norm = 0
    low = high = 0
    valid = True
    for u, a in zip(parts, aggregate):
        for start in range(0, u.size, DOT_CHUNK):
            stop = start + DOT_CHUNK
            hh, hl, ll, sh, sx, sl, lo, hi, ok = _limb_sums(u[start:stop], a[start:stop])
            dot += (int(hh) << (2 * _SPLIT)) + (int(hl) << _SPLIT) + int(ll)
            norm += (int(sh) << (2 * _SPLIT)) + (int(sx) << (_SPLIT + 1)) + int(sl)
            low, high, valid = min(low, int(lo)), max(high, int(hi)), valid and bool(ok)
    return dot, norm, low, high, valid


def _flat(x: np.ndarray) -> np.ndarray:
    # float32 stays float32 (converted in the kernel); anything else is int64 fixed point.
    dtype = np.float32 if np.asarray(x).dtype == np.float32 else np.int64
    return np.ascontiguousarray(x, dtype=dtype).reshape(-1)


def dots_with(
    rows: Sequence[Sequence[np.ndarray]], aggregate: Sequence[np.ndarray], bound: int, *, threads: int | None = None
) -> tuple[list[tuple[int, int]], int, bool]:
    """``([(<u, a>, <u, u>) per row], <a, a>, in_range)``, exact, as Python ints.

    Each row and `aggregate` are parts (a model's tensors, flattened in the
    same order, the same sizes); the vectors are their concatenations. A part
    is int64 fixed point, or float32 standing for its `fixedpoint.to_fixed`
    values, which are computed as they are read. `in_range` is False when some
    |value| >= `bound` (<= 2**40), or a float is not finite with |x| < 128;
    the dots are then meaningless. One task per row, on the kernel thread pool.
    """
    agg = [_flat(a) for a in aggregate]
    flat = [[_flat(p) for p in row] for row in rows]
    if any([p.size for p in row] != [a.size for a in agg] for row in flat):
        raise AggregationError("dots_with: a row's parts differ in size from the aggregate's")
    count = max(1, min(available_threads() if threads is None else threads, len(flat)))
    if count == 1:
        results = [_dots_of_one(row, agg) for row in [*flat, agg]]
    else:
        results = list(_executor().map(lambda row: _dots_of_one(row, agg), [*flat, agg]))
    in_range = all(valid and -bound < low and high < bound for _, _, low, high, valid in results)
    *per_row, (_, agg_norm, _, _, _) = results
    return [(dot, norm) for dot, norm, _, _, _ in per_row], agg_norm, in_range


def dots_of_self(rows: Sequence[Sequence[np.ndarray]], bound: int, *, threads: int | None = None) -> tuple[list[int], bool]:
    """``([<u, u> per row], in_range)``, exact: each row's squared norm, on the same kernel as
    `dots_with` (a row read against itself), one task per row on the kernel thread pool."""
    flat = [[_flat(p) for p in row] for row in rows]
    count = max(1, min(available_threads() if threads is None else threads, len(flat)))
    if count == 1:
        results = [_dots_of_one(row, row) for row in flat]
    else:
        results = list(_executor().map(lambda row: _dots_of_one(row, row), flat))
    in_range = all(valid and -bound < low and high < bound for _, _, low, high, valid in results)
    return [norm for _, norm, _, _, _ in results], in_range


def warm() -> None:
    """Compile, or load from numba's cache, every kernel a round's aggregation and scores call,
    on a few values each. The first call in a process otherwise pays it (seconds on a fresh
    checkout); a node calls this in a spare thread while it trains."""
    f = np.zeros(4, dtype=np.float32)
    q = np.zeros(4, dtype=np.int64)
    weighted_mean_f32([f, f], [1, 1], threads=1)
    weighted_mean_i64([q, q], [1, 1], 2**39, threads=1)
    for row, aggregate in ((f, q), (f, f), (q, q)):
        dots_with([[row]], [aggregate], 2**40, threads=1)

