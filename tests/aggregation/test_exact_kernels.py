"""The exact kernels the robust rules share, against Python-integer references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import fixedpoint
from aggregation.errors import AggregationError, FixedPointRangeError
from aggregation.fixedpoint import (
    DOT_BOUND,
    Q_BOUND,
    SCALE_BITS,
    div_round_half_even,
    exact_gram,
    scale_toward_zero,
    sorted_columns,
    weighted_mean,
)


def half_even(x: Fraction) -> int:
    """Python's round() on a Fraction is round-half-to-even: the reference."""
    return round(x)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**61), 2**61), min_size=1, max_size=30),
    st.one_of(st.integers(1, 2**20), st.sampled_from([1, 2, 4, 2**40, 3 * 2**40])),
)
def test_div_round_half_even_matches_exact_rounding(values: list[int], divisor: int) -> None:
    # Execute
    result = div_round_half_even(np.array(values, dtype=np.int64), divisor)

    # Assert
    assert result.tolist() == [half_even(Fraction(v, divisor)) for v in values]


def test_div_round_half_even_ties_go_to_even() -> None:
    # Prepare: 0.5, 1.5, 2.5, -0.5, -1.5 as halves.
    halves = np.array([1, 3, 5, -1, -3], dtype=np.int64)

    # Execute / Assert
    assert div_round_half_even(halves, 2).tolist() == [0, 2, 2, 0, -2]


@pytest.mark.parametrize("divisor", [0, -1, True, 2**61])
def test_div_round_half_even_rejects_bad_divisors(divisor: int) -> None:
    with pytest.raises(AggregationError):
        div_round_half_even(np.zeros(3, np.int64), divisor)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 9), size=st.integers(0, 70), bits=st.integers(1, 39))
def test_sorted_columns_sorts_every_coordinate(seed: int, n: int, size: int, bits: int) -> None:
    # Prepare: a small chunk so several blocks are produced.
    rng = np.random.default_rng(seed)
    qs = [rng.integers(-(2**bits) + 1, 2**bits, size=size) for _ in range(n)]
    original = fixedpoint.SORT_CHUNK
    fixedpoint.SORT_CHUNK = 16
    try:
        # Execute
        out = np.empty((size, n), dtype=np.int64)
        for coords, block in sorted_columns(qs):
            out[coords] = block
    finally:
        fixedpoint.SORT_CHUNK = original

    # Assert
    assert np.array_equal(out, np.sort(np.stack(qs, axis=1), axis=1))


@st.composite
def gram_rows(draw: st.DrawFn) -> list[list[np.ndarray]]:
    n = draw(st.integers(1, 5))
    sizes = draw(st.lists(st.integers(0, 40), min_size=1, max_size=3))
    bits = draw(st.integers(0, 40))
    bound = max(1, 2**bits - 1) if bits < 40 else DOT_BOUND - 1
    value = st.integers(-bound, bound)
    return [[np.array(draw(st.lists(value, min_size=s, max_size=s)), dtype=np.int64) for s in sizes] for _ in range(n)]


@settings(max_examples=150, deadline=None)
@given(gram_rows())
def test_exact_gram_matches_python_integers(rows: list[list[np.ndarray]]) -> None:
    # Prepare
    flat = [[int(v) for part in row for v in part.tolist()] for row in rows]

    # Execute
    gram = exact_gram(rows)

    # Assert
    for i, x in enumerate(flat):
        for j, y in enumerate(flat):
            assert gram[i][j] == sum(a * b for a, b in zip(x, y))


def test_exact_gram_is_exact_at_the_bound_over_many_chunks() -> None:
    # Prepare: values at +-(2**40 - 1), where a float64 dot product would
    # lose ~30 bits, over more coordinates than one chunk holds.
    rng = np.random.default_rng(7)
    top = DOT_BOUND - 1
    rows = [[rng.choice(np.array([top, -top, top - 12345, 1], np.int64), size=10_000)] for _ in range(4)]

    # Execute
    gram = exact_gram(rows)

    # Assert
    for i in range(4):
        for j in range(4):
            assert gram[i][j] == sum(int(a) * int(b) for a, b in zip(rows[i][0].tolist(), rows[j][0].tolist()))


def test_exact_gram_rejects_out_of_range_and_mismatched_rows() -> None:
    with pytest.raises(FixedPointRangeError):
        exact_gram([[np.array([DOT_BOUND], np.int64)]])
    with pytest.raises(AggregationError):
        exact_gram([[np.zeros(3, np.int64)], [np.zeros(4, np.int64)]])
    with pytest.raises(AggregationError):
        exact_gram([])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(DOT_BOUND - 1), DOT_BOUND - 1), min_size=1, max_size=20),
    st.integers(0, 2**SCALE_BITS - 1),
)
def test_scale_toward_zero_is_exact_truncation(values: list[int], factor: int) -> None:
    # Execute
    result = scale_toward_zero(np.array(values, dtype=np.int64), factor)

    # Assert: trunc(v * factor / 2**40), and never a larger magnitude.
    expected = [int(Fraction(v * factor, 2**SCALE_BITS)) for v in values]  # int() truncates toward zero
    assert result.tolist() == expected
    assert all(abs(r) <= abs(v) for r, v in zip(expected, values))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_weighted_mean_paths_agree(seed: int, n: int) -> None:
    # Prepare: values near the bound with a total weight past 2**23 take the
    # split path; the same values with small weights the direct path. Both
    # must equal the exact rational mean rounded half to even.
    rng = np.random.default_rng(seed)
    qs = [rng.integers(-(Q_BOUND - 1), Q_BOUND, size=17) for _ in range(n)]
    for weights in ([int(rng.integers(1, 100)) for _ in range(n)], [int(rng.integers(2**23, 2**24)) for _ in range(n)]):
        # Execute
        result = weighted_mean(qs, weights)

        # Assert
        total = sum(weights)
        for k in range(17):
            exact = Fraction(sum(w * int(q[k]) for q, w in zip(qs, weights)), total)
            assert int(result[k]) == half_even(exact)


def test_weighted_mean_direct_path_checks_the_bound() -> None:
    with pytest.raises(FixedPointRangeError):
        weighted_mean([np.array([0, Q_BOUND], np.int64)], [1])


def test_exact_gram_is_the_same_with_the_blas_threads_it_would_otherwise_use(monkeypatch) -> None:
    # Prepare: exact_gram pins OpenBLAS to one thread for speed only; without
    # the pin the threaded kernel must give the very same integers.
    import contextlib

    rng = np.random.default_rng(3)
    rows = [[rng.integers(-(2**39) + 1, 2**39, size=50_000)] for _ in range(9)]
    pinned = exact_gram(rows)
    monkeypatch.setattr(fixedpoint, "_one_blas_thread", contextlib.nullcontext)

    # Execute
    threaded = exact_gram(rows)

    # Assert
    assert threaded == pinned
