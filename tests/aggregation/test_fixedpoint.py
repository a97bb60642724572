"""Exact fixed-point arithmetic against exact Python-integer references."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import fixedpoint
from aggregation.errors import AggregationError, FixedPointRangeError, WeightOverflowError
from aggregation.fixedpoint import MAX_TOTAL_WEIGHT, Q_BOUND, exact_dot, to_fixed, to_float32, weighted_mean

fixed_values = st.integers(min_value=-(Q_BOUND - 1), max_value=Q_BOUND - 1)


@st.composite
def grid_float32(draw: st.DrawFn) -> tuple[float, int]:
    """A float32 x = m * 2**e on the 2**-32 grid with |x| < 128, and its fixed value."""
    mantissa = draw(st.integers(min_value=-(2**24 - 1), max_value=2**24 - 1))
    exponent = draw(st.integers(min_value=-32, max_value=6 - 24 + 1))  # |m * 2**e| < 2**24 * 2**-17 = 128
    return float(Fraction(mantissa) * Fraction(2) ** exponent), mantissa * 2 ** (exponent + 32)


@settings(max_examples=300, deadline=None)
@given(st.lists(grid_float32(), min_size=1, max_size=20))
def test_roundtrip_is_exact_on_the_grid(values: list[tuple[float, int]]) -> None:
    # Prepare
    x = np.array([v for v, _ in values], dtype=np.float32)
    assert x.astype(np.float64).tolist() == [v for v, _ in values]  # each is exactly representable

    # Execute
    q = to_fixed(x)
    back = to_float32(q)

    # Assert
    assert q.dtype == np.int64
    assert q.tolist() == [fixed for _, fixed in values]
    assert back.tobytes() == (x + np.float32(0)).tobytes()  # + 0 turns -0.0 into 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, min_value=-127.5, max_value=127.5), min_size=1, max_size=20))
def test_to_fixed_is_the_nearest_quantum(values: list[float]) -> None:
    # Prepare
    x = np.array(values, dtype=np.float32)

    # Execute
    q = to_fixed(x)

    # Assert: within half a quantum of the exact value 2**32 * x.
    for value, fixed in zip(x.tolist(), q.tolist()):
        assert abs(Fraction(fixed) - Fraction(value) * 2**32) <= Fraction(1, 2)


def test_to_fixed_matches_the_float64_definition_on_random_bit_patterns() -> None:
    # Every float32 class in range (normal, subnormal, signed zeros, values with and without a
    # fraction at 2**-32), from raw bits; the reference widens to float64 before scaling.
    bits = np.random.default_rng(11).integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (np.abs(x) < 128)]

    assert np.array_equal(to_fixed(x), np.rint(x.astype(np.float64) * 2.0**32).astype(np.int64))


def test_to_fixed_rounds_half_to_even() -> None:
    # Prepare: 0.5, 1.5 and -2.5 quanta.
    x = np.array([2.0**-33, 3 * 2.0**-33, -5 * 2.0**-33], dtype=np.float32)

    # Execute / Assert
    assert to_fixed(x).tolist() == [0, 2, -2]


@pytest.mark.parametrize("bad", [128.0, -128.0, 1e30, np.inf, -np.inf, np.nan])
def test_to_fixed_rejects_values_outside_the_range(bad: float) -> None:
    # Execute / Assert
    with pytest.raises(FixedPointRangeError):
        to_fixed(np.array([0.0, bad], dtype=np.float32))


def test_to_fixed_accepts_the_largest_float32_below_the_bound() -> None:
    # Prepare
    largest = np.nextafter(np.float32(128), np.float32(0))

    # Execute / Assert
    assert to_fixed(np.array([largest, -largest])).tolist() == [int(largest * 2**32), -int(largest * 2**32)]


def test_to_fixed_rejects_other_dtypes() -> None:
    # Execute / Assert
    with pytest.raises(FixedPointRangeError, match="float32"):
        to_fixed(np.zeros(3, dtype=np.float64))


def reference_mean(columns: list[list[int]], weights: list[int]) -> list[int]:
    total = sum(weights)
    # round() on a Fraction rounds half to even.
    return [round(Fraction(sum(w * q for w, q in zip(weights, col)), total)) for col in zip(*columns)]


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=6),
    size=st.integers(min_value=1, max_value=8),
    big=st.booleans(),
)
def test_weighted_mean_equals_exact_fraction_reference(data: st.DataObject, n: int, size: int, big: bool) -> None:
    # Prepare: small values (ties happen) or full-range values and weights.
    values = fixed_values if big else st.integers(min_value=-7, max_value=7)
    weight = st.integers(min_value=1, max_value=MAX_TOTAL_WEIGHT // 8 if big else 5)
    columns = [data.draw(st.lists(values, min_size=size, max_size=size)) for _ in range(n)]
    weights = data.draw(st.lists(weight, min_size=n, max_size=n))

    # Execute
    mean = weighted_mean([np.array(c, dtype=np.int64) for c in columns], weights)

    # Assert
    assert mean.dtype == np.int64
    assert mean.tolist() == reference_mean(columns, weights)


def test_weighted_mean_at_the_extremes_does_not_overflow() -> None:
    # Prepare: the largest values with a total weight of 2**42 - 1.
    top = np.array([Q_BOUND - 1, -(Q_BOUND - 1), Q_BOUND - 1], dtype=np.int64)
    low = np.array([Q_BOUND - 1, -(Q_BOUND - 1), -(Q_BOUND - 1)], dtype=np.int64)
    weights = [MAX_TOTAL_WEIGHT - 2, 1]

    # Execute
    mean = weighted_mean([top, low], weights)

    # Assert
    assert mean.tolist() == reference_mean([top.tolist(), low.tolist()], weights)


@pytest.mark.parametrize(
    ("weights", "error"),
    [([0, 1], WeightOverflowError), ([-1, 2], WeightOverflowError), ([True, 1], WeightOverflowError),
     ([MAX_TOTAL_WEIGHT // 2, MAX_TOTAL_WEIGHT // 2], WeightOverflowError), ([1], AggregationError)],
)
def test_weighted_mean_rejects_bad_weights(weights: list, error: type[Exception]) -> None:
    # Prepare
    qs = [np.zeros(3, np.int64), np.ones(3, np.int64)]

    # Execute / Assert
    with pytest.raises(error):
        weighted_mean(qs, weights)


@pytest.mark.parametrize("value", [Q_BOUND, -Q_BOUND, np.iinfo(np.int64).min])
def test_weighted_mean_rejects_values_outside_the_fixed_range(value: int) -> None:
    # Execute / Assert
    with pytest.raises(FixedPointRangeError):
        weighted_mean([np.array([0, value], dtype=np.int64)], [1])


dot_values = st.integers(min_value=-(fixedpoint.DOT_BOUND - 1), max_value=fixedpoint.DOT_BOUND - 1)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(min_value=0, max_value=12), chunk=st.sampled_from([1, 3, 2**22]))
def test_exact_dot_equals_python_integers(data: st.DataObject, size: int, chunk: int) -> None:
    # Prepare: several chunk sizes exercise the chunk loop's boundaries.
    a = data.draw(st.lists(dot_values, min_size=size, max_size=size))
    b = data.draw(st.lists(dot_values, min_size=size, max_size=size))
    original = fixedpoint.DOT_CHUNK
    fixedpoint.DOT_CHUNK = chunk
    try:
        # Execute
        result = exact_dot(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64))
    finally:
        fixedpoint.DOT_CHUNK = original

    # Assert
    assert type(result) is int
    assert result == sum(x * y for x, y in zip(a, b))


def test_exact_dot_of_a_million_extreme_values_is_exact_and_fast() -> None:
    # Prepare: products of 2**80 each; an int64 or float64 dot would be wrong.
    rng = np.random.default_rng(7)
    top = fixedpoint.DOT_BOUND - 1
    a = rng.choice(np.array([top, -top], dtype=np.int64), size=10**6)
    b = rng.integers(-top, top, size=10**6, dtype=np.int64)

    # Execute
    start = time.perf_counter()
    result = exact_dot(a, b)
    elapsed = time.perf_counter() - start

    # Assert
    assert result == sum(x * y for x, y in zip(a.tolist(), b.tolist()))
    assert elapsed < 2.0


def test_exact_dot_rejects_values_outside_its_range() -> None:
    # Execute / Assert
    with pytest.raises(FixedPointRangeError):
        exact_dot(np.array([fixedpoint.DOT_BOUND], np.int64), np.array([1], np.int64))


def test_to_float32_rejects_values_it_cannot_convert_exactly() -> None:
    # Execute / Assert
    with pytest.raises(FixedPointRangeError):
        to_float32(np.array([2**53], dtype=np.int64))
