"""The compiled FedAvg kernels (aggregation.kernels) against plain integer arithmetic.

The kernels must give exactly the integers of the numpy reference
(`to_fixed`, then sum of w * q, then `div_round_half_even`) for any input in
range, on any thread count, and must refuse anything out of range.
"""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.abc import Float32Backed, FixedUpdate, RuleOptions
from aggregation.errors import AggregationError, FixedPointRangeError
from aggregation.fixedpoint import Q_BOUND, div_round_half_even, to_fixed, weighted_mean, weighted_mean_float32
from aggregation.kernels import BLOCK, available_threads, weighted_mean_f32, weighted_mean_i64
from aggregation.rules import apply_rule


def reference_mean(qs: list[np.ndarray], weights: list[int]) -> np.ndarray:
    # Python integers: no overflow, no rounding until the one division.
    total = sum(weights)
    sums = [sum(int(q[j]) * w for q, w in zip(qs, weights)) for j in range(qs[0].size)]
    out = []
    for s in sums:
        floor, rem = divmod(s, total)
        if 2 * rem > total or (2 * rem == total and floor % 2 == 1):
            floor += 1
        out.append(floor)
    return np.array(out, dtype=np.int64)


def tricky_floats(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 values mixing ordinary deltas, halfway cases of the 2**-32 grid, subnormals and edges."""
    x = (rng.standard_normal(size) * 0.01).astype(np.float32)
    picks = rng.integers(0, 6, size)
    halfway = ((rng.integers(-(2**20), 2**20, size) + 0.5) * 2.0**-32).astype(np.float32)
    x = np.where(picks == 1, halfway, x)
    x = np.where(picks == 2, np.float32(np.nextafter(np.float32(128.0), np.float32(0.0))) * rng.choice([-1, 1], size), x)
    x = np.where(picks == 3, np.float32(1e-40) * rng.standard_normal(size).astype(np.float32), x)
    x = np.where(picks == 4, rng.uniform(-127, 127, size).astype(np.float32), x)
    return x.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 7),
    size=st.integers(0, 3 * BLOCK + 5),
    threads=st.integers(1, 4),
)
def test_float32_kernel_equals_converting_first(seed: int, n: int, size: int, threads: int) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    xs = [tricky_floats(rng, size) for _ in range(n)]
    weights = [int(w) for w in rng.integers(1, 2**23 // n, n)]

    # Execute
    mean, in_range = weighted_mean_f32(xs, weights, threads=threads)

    # Assert
    assert in_range
    expected = div_round_half_even(sum(to_fixed(x) * w for x, w in zip(xs, weights)), sum(weights)) if size else mean
    assert np.array_equal(mean, expected)


@settings(max_examples=60, deadline=None)
@given(
    columns=st.lists(st.lists(st.integers(-(Q_BOUND - 1), Q_BOUND - 1), min_size=5, max_size=5), min_size=1, max_size=6),
    data=st.data(),
)
def test_int64_kernel_equals_python_integers_at_any_magnitude(columns: list[list[int]], data: st.DataObject) -> None:
    # Prepare: weights up to a total of 2**23, the most the direct path takes,
    # so the sums reach 2**62 and the division's float first guess is tested
    # where it is least accurate.
    weights = data.draw(st.lists(st.integers(1, 2**23 // len(columns)), min_size=len(columns), max_size=len(columns)))
    qs = [np.array(c, dtype=np.int64) for c in columns]

    # Execute
    mean, in_range = weighted_mean_i64(qs, weights, Q_BOUND, threads=1)

    # Assert
    assert in_range
    assert mean.tolist() == reference_mean(qs, weights).tolist()


def test_division_ties_go_to_the_even_neighbour_on_both_signs() -> None:
    # Sums of 1, 3, -1, -3 and 5 over a total weight of 2: exactly halfway.
    qs = [np.array([1, 3, -1, -3, 5, 4], dtype=np.int64), np.array([0, 0, 0, 0, 0, 0], dtype=np.int64)]

    mean, _ = weighted_mean_i64(qs, [1, 1], Q_BOUND)

    assert mean.tolist() == [0, 2, 0, -2, 2, 2]
    assert [float(Fraction(int(s), 2)) for s in qs[0]] == [0.5, 1.5, -0.5, -1.5, 2.5, 2.0]


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_thread_counts_give_the_same_integers(threads: int) -> None:
    # Prepare: big enough that the range is really split between threads.
    rng = np.random.default_rng(7)
    xs = [tricky_floats(rng, 300_001) for _ in range(5)]
    weights = [3, 1000, 7, 250, 1]

    # Execute
    one, _ = weighted_mean_f32(xs, weights, threads=1)
    many, _ = weighted_mean_f32(xs, weights, threads=threads)
    via_int64 = weighted_mean([to_fixed(x) for x in xs], weights)

    # Assert
    assert np.array_equal(one, many)
    assert np.array_equal(one, via_int64)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 128.0, -128.0, 3e38])
def test_values_out_of_range_are_refused_wherever_they_are(bad: float) -> None:
    rng = np.random.default_rng(1)
    xs = [(rng.standard_normal(200_000) * 0.01).astype(np.float32) for _ in range(3)]
    xs[2][199_999] = bad

    with pytest.raises(FixedPointRangeError):
        weighted_mean_float32(xs, [1, 2, 3], threads=2)
    with pytest.raises(FixedPointRangeError):
        weighted_mean_float32(xs, [1, 2, 3], threads=1)


def test_int64_values_out_of_range_are_refused() -> None:
    q = np.zeros(100_000, dtype=np.int64)
    q[-1] = -Q_BOUND
    _, in_range = weighted_mean_i64([q], [1], Q_BOUND, threads=2)
    assert not in_range
    with pytest.raises(FixedPointRangeError):
        weighted_mean([q], [1])


def test_float32_mean_takes_shapes_and_refuses_mismatches() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 8

    mean = weighted_mean_float32([x, x], [2, 5])

    assert mean.shape == (3, 4)
    assert np.array_equal(mean, to_fixed(x))
    with pytest.raises(AggregationError):
        weighted_mean_float32([x, x.reshape(4, 3)], [1, 1])
    with pytest.raises(FixedPointRangeError):
        weighted_mean_float32([x.astype(np.float64)], [1])


def test_huge_total_weight_falls_back_to_the_split_path() -> None:
    rng = np.random.default_rng(3)
    xs = [(rng.standard_normal(1000) * 0.01).astype(np.float32) for _ in range(2)]
    weights = [2**40, 2**41 - 3]

    assert np.array_equal(weighted_mean_float32(xs, weights), weighted_mean([to_fixed(x) for x in xs], weights))


def test_float32_backed_update_converts_lazily_and_fedavg_agrees_with_int64() -> None:
    # Prepare
    rng = np.random.default_rng(5)
    shapes = {"a": (300, 257), "b": (9,)}
    floats = [{k: tricky_floats(rng, int(np.prod(s))).reshape(s) for k, s in shapes.items()} for _ in range(4)]
    samples = [5, 80, 1, 13]
    backed = [FixedUpdate.from_float32(f, s) for f, s in zip(floats, samples)]
    converted = [FixedUpdate({k: to_fixed(v) for k, v in f.items()}, s) for f, s in zip(floats, samples)]

    # Execute
    from_floats = apply_rule("fedavg", backed, RuleOptions(max_samples=40))
    from_ints = apply_rule("fedavg", converted, RuleOptions(max_samples=40))

    # Assert: same integers, and FedAvg never needed the int64 copies.
    assert sorted(from_floats) == sorted(from_ints)
    assert all(np.array_equal(from_floats[k], from_ints[k]) for k in from_ints)
    assert all(isinstance(u.tensors, Float32Backed) and not u.tensors._fixed for u in backed)
    assert np.array_equal(backed[0].tensors["a"], converted[0].tensors["a"])
    assert sorted(backed[0].tensors) == ["a", "b"] and len(backed[0].tensors) == 2
    with pytest.raises(AggregationError):
        Float32Backed({"a": np.zeros(3, np.float64)})


def test_thread_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLEDGER_THREADS", "3")
    assert available_threads() == 3
    monkeypatch.setenv("FEDLEDGER_THREADS", "lots")
    with pytest.raises(ValueError, match="FEDLEDGER_THREADS"):
        available_threads()
    monkeypatch.delenv("FEDLEDGER_THREADS")
    assert 1 <= available_threads() <= 8


def test_to_float32_equals_the_ldexp_definition_on_random_integers() -> None:
    # to_float32 multiplies by 2**-32 in float64: exact, like ldexp, then one rounding.
    from aggregation.fixedpoint import to_float32

    rng = np.random.default_rng(11)
    q = np.concatenate([rng.integers(-(2**53) + 1, 2**53, 500_000), rng.integers(-(2**33), 2**33, 500_000)])

    assert np.array_equal(to_float32(q), np.ldexp(q.astype(np.float64), -32).astype(np.float32))
    with pytest.raises(FixedPointRangeError):
        to_float32(np.array([2**53], dtype=np.int64))


def test_a_forked_child_runs_the_threaded_kernel_with_a_pool_of_its_own() -> None:
    # Prepare: the parent's pool is running before the fork.
    import os

    rng = np.random.default_rng(13)
    xs = [(rng.standard_normal(300_000) * 0.01).astype(np.float32) for _ in range(3)]
    expected, _ = weighted_mean_f32(xs, [1, 2, 3], threads=2)
    read, write = os.pipe()

    # Execute
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            mean, _ = weighted_mean_f32(xs, [1, 2, 3], threads=2)
            os.write(write, b"same" if np.array_equal(mean, expected) else b"different")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)

    # Assert: without the fork handler the child would wait forever on dead threads.
    assert status == 0
    assert answer == b"same"


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(1, 4), sizes=st.lists(st.integers(0, 9), min_size=1, max_size=3), chunk=st.integers(1, 5))
def test_dots_with_equal_python_integers_at_the_largest_values(
    data: st.DataObject, n: int, sizes: list[int], chunk: int
) -> None:
    # Prepare: values up to 2**40 in magnitude, and chunks of a few values so
    # the chunk boundaries (2**21 values in real use) fall inside the tensors.
    import aggregation.kernels as kernels

    value = st.integers(-(2**40) + 1, 2**40 - 1)
    def vector() -> list[np.ndarray]:
        return [np.array(data.draw(st.lists(value, min_size=s, max_size=s)), dtype=np.int64) for s in sizes]
    rows = [vector() for _ in range(n)]
    aggregate = vector()
    flat_a = [int(v) for part in aggregate for v in part]

    # Execute
    saved = kernels.DOT_CHUNK
    kernels.DOT_CHUNK = chunk
    try:
        per_row, norm_a, in_range = kernels.dots_with(rows, aggregate, 2**40, threads=1 + n % 3)
    finally:
        kernels.DOT_CHUNK = saved

    # Assert
    assert in_range
    assert norm_a == sum(v * v for v in flat_a)
    for row, (dot, norm) in zip(rows, per_row):
        flat_u = [int(v) for part in row for v in part]
        assert dot == sum(u * a for u, a in zip(flat_u, flat_a))
        assert norm == sum(u * u for u in flat_u)


def test_dots_with_refuses_values_out_of_range_in_a_row_or_the_aggregate() -> None:
    from aggregation.kernels import dots_with
    from aggregation.scores import contribution_scores

    ok = np.zeros(10, dtype=np.int64)
    bad = ok.copy()
    bad[9] = -(2**40)
    assert not dots_with([[bad]], [ok], 2**40)[2]
    assert not dots_with([[ok]], [bad], 2**40)[2]
    assert dots_with([[ok]], [ok], 2**40)[2]
    with pytest.raises(FixedPointRangeError):
        contribution_scores([{"w": bad}], {"w": ok})
    with pytest.raises(AggregationError):
        dots_with([[np.zeros(3, np.int64)]], [ok], 2**40)


def test_scores_are_the_same_on_one_thread_and_many(monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregation.scores import contribution_scores

    rng = np.random.default_rng(17)
    common = rng.standard_normal(50_000).astype(np.float32) * 0.01
    deltas = [{"w": to_fixed((common + rng.standard_normal(50_000).astype(np.float32) * 0.01).astype(np.float32))} for _ in range(6)]
    deltas.insert(3, None)
    deltas.append({"w": deltas[1]["w"].copy()})  # the same update twice: both score 0
    aggregate = {"w": weighted_mean([d["w"] for d in deltas if d is not None], [1] * 7)}

    monkeypatch.setenv("FEDLEDGER_THREADS", "1")
    one = contribution_scores(deltas, aggregate)
    monkeypatch.setenv("FEDLEDGER_THREADS", "4")
    many = contribution_scores(deltas, aggregate)

    assert one == many
    assert one[1] == one[3] == one[7] == 0
    assert all(0 < s <= 10**18 for i, s in enumerate(one) if i not in (1, 3, 7))


def test_different_deltas_with_the_same_dot_and_norm_both_keep_their_scores() -> None:
    from aggregation.scores import contribution_scores

    aggregate = {"w": np.array([1, 0], dtype=np.int64)}
    first, mirror = {"w": np.array([1, 2], dtype=np.int64)}, {"w": np.array([1, -2], dtype=np.int64)}

    # cos = 1 / sqrt(5) for both, and equal (dot, norm): only an exact comparison tells them apart.
    assert contribution_scores([first, mirror], aggregate) == [10**18, 10**18]  # both at the median
    # An exact copy of the first: the pair scores 0, the mirror, alone at the median, keeps its 1.
    assert contribution_scores([first, mirror, {"w": first["w"].copy()}], aggregate) == [0, 10**18, 0]


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(1, 3), size=st.integers(0, 12), chunk=st.integers(1, 5))
def test_dots_with_reads_float32_parts_as_their_fixed_point_values(data: st.DataObject, n: int, size: int, chunk: int) -> None:
    # Prepare: floats across the whole range, tiny ones (which rint takes to 0) and halves
    # of the fixed-point grid (rint's ties) included; the same vectors converted first.
    import aggregation.kernels as kernels

    grid = st.integers(-(2**23), 2**23).map(lambda k: float(k) / 2**33)  # k/2 units, exactly: odd k are ties
    value = st.one_of(st.floats(-127.875, 127.875, width=32), st.floats(-(2.0**-30), 2.0**-30, width=32), grid)
    def vector() -> np.ndarray:
        return np.array(data.draw(st.lists(value, min_size=size, max_size=size)), dtype=np.float32)
    rows = [[vector()] for _ in range(n)]
    aggregate = [vector()]
    saved = kernels.DOT_CHUNK
    kernels.DOT_CHUNK = chunk
    try:
        # Execute: float rows against a float aggregate, against its int64 values, and int64 throughout.
        floats = kernels.dots_with(rows, aggregate, 2**40)
        mixed = kernels.dots_with(rows, [to_fixed(aggregate[0])], 2**40, threads=1)
        fixed = kernels.dots_with([[to_fixed(r[0])] for r in rows], [to_fixed(aggregate[0])], 2**40, threads=2)
    finally:
        kernels.DOT_CHUNK = saved

    # Assert
    assert floats == mixed == fixed
    assert floats[2]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 128.0, -128.0, 3e38])
def test_dots_with_refuses_float_values_out_of_range_in_a_row_or_the_aggregate(bad: float) -> None:
    from aggregation.kernels import dots_with

    ok = np.zeros(10, dtype=np.float32)
    worse = ok.copy()
    worse[9] = bad
    assert not dots_with([[worse]], [ok], 2**40)[2]
    assert not dots_with([[ok]], [worse], 2**40)[2]
    assert dots_with([[ok]], [to_fixed(ok)], 2**40)[2]  # the good pair is in range
    with pytest.raises(FixedPointRangeError):
        from aggregation.scores import contribution_scores

        contribution_scores([Float32Backed({"w": worse})], {"w": to_fixed(ok)})


def test_scores_of_float_backed_deltas_are_those_of_their_fixed_point_values() -> None:
    # Float32Backed deltas (as a round's recomputation holds them) are scored from their floats,
    # never converted; the scores, copies and replays found must be those of the int64 values.
    from aggregation.scores import contribution_scores

    rng = np.random.default_rng(5)
    common = rng.standard_normal(40_000).astype(np.float32) * 0.01
    floats = [(common + rng.standard_normal(40_000).astype(np.float32) * 0.01).astype(np.float32) for _ in range(6)]
    old = [(common + rng.standard_normal(40_000).astype(np.float32) * 0.01).astype(np.float32) for _ in range(3)]
    floats[4] = (old[1] + rng.standard_normal(40_000).astype(np.float32) * 1e-4).astype(np.float32)  # a noisy replay
    floats[5] = old[2].copy()  # an exact one
    floats[0][7] = 0.0
    tiny = floats[0].copy()
    tiny[7] = np.float32(2.0**-40)  # rint(2**-8) = 0
    floats.append(tiny)  # equal to the first in fixed point, not in float32: a copy
    aggregate = {"w": weighted_mean_float32(floats, [1] * len(floats))}

    backed = contribution_scores([Float32Backed({"w": f}) for f in floats], aggregate, [Float32Backed({"w": o}) for o in old])
    fixed = contribution_scores([{"w": to_fixed(f)} for f in floats], aggregate, [{"w": to_fixed(o)} for o in old])

    assert backed == fixed
    assert backed[0] == backed[4] == backed[5] == backed[6] == 0
    assert all(s > 0 for s in backed[1:4])


def test_warm_compiles_every_kernel_a_round_calls_and_starts_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import aggregation.kernels as kernels
    import aggregation.warmup as warmup

    kernels.warm()
    assert kernels._range_f32.signatures and kernels._range_i64.signatures
    kinds = {tuple(str(t.dtype) for t in sig) for sig in kernels._limb_sums.signatures}
    assert {("float32", "int64"), ("float32", "float32"), ("int64", "int64")} <= kinds

    # In the background: one thread, however often it is asked for.
    calls: list[str] = []
    ran = threading.Event()
    monkeypatch.setattr(warmup, "_started", False)
    monkeypatch.setattr(kernels, "warm", lambda: (calls.append(threading.current_thread().name), ran.set()))
    warmup.warm_in_background()
    warmup.warm_in_background()
    assert ran.wait(10)
    assert calls == ["fedledger-warm"]
