"""Median, trimmed mean, Multi-Krum and norm clipping: exact values, properties, options."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import clip, fedavg, krum, median, trimmed_mean
from aggregation.abc import FixedUpdate, RuleOptions
from aggregation.api import aggregate_round
from aggregation.errors import AggregationError
from aggregation.fixedpoint import FRACTION_BITS, to_fixed
from aggregation.rules import RULES, apply_rule, check_options
from aggregation.update import encode_model, encode_update

SHAPES = {"conv.weight": (2, 3), "fc.bias": (4,)}
ROBUST = {
    "median": RuleOptions(),
    "trimmed-mean": RuleOptions(trim=0.25),
    "multi-krum": RuleOptions(f=1, m=2),
}


def fixed_update(rng: np.random.Generator, scale: float = 0.1, num_samples: int = 1) -> FixedUpdate:
    return FixedUpdate(
        tensors={k: to_fixed((rng.standard_normal(s) * scale).astype(np.float32)) for k, s in SHAPES.items()},
        num_samples=num_samples,
    )


def from_ints(values: dict[str, list[int]], num_samples: int = 1) -> FixedUpdate:
    return FixedUpdate(tensors={k: np.array(v, np.int64) for k, v in values.items()}, num_samples=num_samples)


def column(values: list[int]) -> list[FixedUpdate]:
    """One single-coordinate update per value."""
    return [from_ints({"w": [v]}) for v in values]


# --- median ---------------------------------------------------------------


def test_median_of_an_odd_count_is_the_middle_value() -> None:
    result = median.aggregate(column([5, -3, 100, 7, 0]), RuleOptions())
    assert result["w"].tolist() == [5]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2], 2), ([1, 4], 2), ([2, 3], 2), ([-3, -2], -2), ([-1, 0], 0), ([10, 20, 30, 41], 25)],
)
def test_median_of_an_even_count_rounds_the_middle_mean_half_to_even(values: list[int], expected: int) -> None:
    # (1+2)/2 = 1.5 -> 2, (2+3)/2 = 2.5 -> 2, (-3-2)/2 = -2.5 -> -2, (-1+0)/2 -> 0, (20+30)/2 = 25.
    assert median.aggregate(column(values), RuleOptions())["w"].tolist() == [expected]


def test_median_ignores_a_minority_of_huge_updates() -> None:
    # Prepare: 3 honest updates near 1, 2 attackers at the range limit.
    honest = [1 << 32, (1 << 32) + 5, (1 << 32) - 5]
    evil = [(1 << 39) - 1, (1 << 39) - 1]

    # Execute / Assert
    assert median.aggregate(column(honest + evil), RuleOptions())["w"].tolist() == [(1 << 32) + 5]


# --- trimmed mean -----------------------------------------------------------


def test_trimmed_mean_drops_floor_beta_n_from_each_end() -> None:
    # Prepare: n = 10, trim 0.2 drops 2 from each end; the 6 left average to 5.5 -> 6 (half to even).
    values = [100, -100, 3, 4, 5, 6, 7, 8, 99, -99]

    # Execute
    result = trimmed_mean.aggregate(column(values), RuleOptions(trim=0.2))

    # Assert
    assert result["w"].tolist() == [round(Fraction(3 + 4 + 5 + 6 + 7 + 8, 6))]


@pytest.mark.parametrize(("n", "trim", "cut"), [(10, 0.2, 2), (10, 0.19, 1), (3, 0.49, 1), (2, 0.49, 0), (30, 0.1, 3), (5, 0.0, 0)])
def test_trim_count_is_int_of_beta_times_n_like_scipy(n: int, trim: float, cut: int) -> None:
    assert trimmed_mean.trim_count(n, trim) == cut == min(int(trim * n), (n - 1) // 2)


def test_trimmed_mean_with_no_trim_is_the_plain_mean() -> None:
    assert trimmed_mean.aggregate(column([1, 2, 4]), RuleOptions(trim=0.0))["w"].tolist() == [2]  # 7/3 -> 2


# --- multi-krum -------------------------------------------------------------


def test_krum_scores_sum_the_nearest_squared_distances() -> None:
    # Prepare: points 0, 1, 3, 10 on a line; n=4, f=0 -> 2 neighbours each.
    updates = column([0, 1, 3, 10])

    # Execute
    scores = krum.krum_scores(updates, f=0)

    # Assert: 0 -> 1+9, 1 -> 1+4, 3 -> 4+9, 10 -> 49+81
    assert scores == [10, 5, 13, 130]
    assert krum.select(updates, f=0, m=2) == [1, 0]


def test_krum_distances_are_exact_beyond_float64() -> None:
    # Prepare: two updates that differ by 1 quantum in one coordinate of huge
    # values: the squared distance 1 vanishes in a float64 Gram computation.
    big = (1 << 39) - 1
    a = from_ints({"w": [big, big, big]})
    b = from_ints({"w": [big, big, big - 1]})
    c = from_ints({"w": [big, big - 3, big]})

    # Execute
    distances = krum.squared_distances([a, b, c])

    # Assert
    assert distances == [[0, 1, 9], [1, 0, 10], [9, 10, 0]]


def test_krum_breaks_ties_by_canonical_index() -> None:
    # Prepare: symmetric points -1, +1 around 0: the outer two tie.
    updates = column([-1, 1, 0])

    # Execute / Assert: scores (n=3, f=0 -> 1 neighbour) are 1, 1, 1: all tie.
    assert krum.krum_scores(updates, f=0) == [1, 1, 1]
    assert krum.select(updates, f=0, m=2) == [0, 1]


def test_multi_krum_rejects_the_outlier_and_weights_the_rest_by_samples() -> None:
    # Prepare: three honest updates and one far away; keep m = 3 with f = 1.
    updates = [
        from_ints({"w": [10]}, num_samples=1),
        from_ints({"w": [12]}, num_samples=3),
        from_ints({"w": [11]}, num_samples=1),
        from_ints({"w": [10**9]}, num_samples=100),
    ]

    # Execute
    result = krum.aggregate(updates, RuleOptions(f=1, m=3))
    capped = krum.aggregate(updates, RuleOptions(f=1, m=3, max_samples=1))

    # Assert: (10 + 36 + 11) / 5 = 11.4 -> 11; capped: (10 + 12 + 11) / 3 = 11.
    assert result["w"].tolist() == [11]
    assert capped["w"].tolist() == [11]
    # n - f - 2 = 1 neighbour: the honest three all score 1 and tie, so index order.
    assert krum.select(updates, f=1, m=3) == [0, 1, 2]


def test_multi_krum_keeps_all_when_m_exceeds_n() -> None:
    updates = column([1, 2, 3])
    assert krum.aggregate(updates, RuleOptions(f=5, m=10))["w"].tolist() == [2]


# --- clipping ---------------------------------------------------------------


def test_clip_leaves_short_updates_alone_and_scales_long_ones_exactly() -> None:
    # Prepare: the vector (3, 4) in model units has norm 5.
    unit = 1 << FRACTION_BITS
    update = from_ints({"w": [3 * unit, 4 * unit]})

    # Execute
    same = clip.clip_update(update, 5.0)
    halved = clip.clip_update(update, 2.5)

    # Assert: norm exactly 5 is not above the clip; 2.5 halves it exactly.
    assert same is update
    assert halved.tensors["w"].tolist() == [3 * unit // 2, 2 * unit]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-6, 10.0), bound=st.floats(1e-6, 100.0))
def test_clipping_never_increases_a_norm_and_respects_the_bound(seed: int, scale: float, bound: float) -> None:
    # Prepare
    update = fixed_update(np.random.default_rng(seed), scale)

    # Execute
    clipped = clip.clip_update(update, bound)

    # Assert: exact integer comparisons, in fixed-point units.
    before, after = clip.squared_norm(update), clip.squared_norm(clipped)
    assert after <= before
    assert Fraction(after) <= (Fraction(bound) * 2**FRACTION_BITS) ** 2 or after == before
    for key in SHAPES:
        assert np.all(np.abs(clipped.tensors[key]) <= np.abs(update.tensors[key]))


def test_clip_applies_before_the_rule() -> None:
    # Prepare: one update of norm 8 clipped to 1, in model units.
    unit = 1 << FRACTION_BITS
    updates = [from_ints({"w": [8 * unit]})]

    # Execute
    result = apply_rule("fedavg", updates, RuleOptions(clip=1.0))

    # Assert
    assert result["w"].tolist() == [unit]


# --- properties shared by the robust rules --------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 7), rule=st.sampled_from(sorted(ROBUST)), data=st.data())
def test_robust_rules_are_permutation_invariant(seed: int, n: int, rule: str, data: st.DataObject) -> None:
    # Prepare: duplicates included, so ties are exercised.
    rng = np.random.default_rng(seed)
    updates = [fixed_update(rng, num_samples=int(rng.integers(1, 50))) for _ in range(n)]
    if n > 2:
        updates[-1] = updates[0]
    order = data.draw(st.permutations(range(n)))

    # Execute
    straight = apply_rule(rule, updates, ROBUST[rule])
    permuted = apply_rule(rule, [updates[i] for i in order], ROBUST[rule])

    # Assert
    for key in SHAPES:
        assert np.array_equal(straight[key], permuted[key])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 9), rule=st.sampled_from(["median", "trimmed-mean"]),
       trim=st.floats(0.0, 0.49))
def test_median_and_trimmed_mean_stay_within_the_inputs(seed: int, n: int, rule: str, trim: float) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    updates = [fixed_update(rng, scale=float(rng.choice([1e-9, 0.1, 20.0]))) for _ in range(n)]
    options = RuleOptions(trim=trim) if rule == "trimmed-mean" else RuleOptions()

    # Execute
    result = apply_rule(rule, updates, options)

    # Assert
    for key in SHAPES:
        stacked = np.stack([u.tensors[key] for u in updates])
        assert np.all(stacked.min(axis=0) <= result[key]) and np.all(result[key] <= stacked.max(axis=0))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), rule=st.sampled_from(sorted(RULES)))
def test_every_rule_of_identical_updates_is_that_update(seed: int, n: int, rule: str) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    update = fixed_update(rng)
    options = ROBUST.get(rule, RuleOptions())

    # Execute
    result = apply_rule(rule, [FixedUpdate(update.tensors, int(rng.integers(1, 9))) for _ in range(n)], options)

    # Assert
    for key in SHAPES:
        assert np.array_equal(result[key], update.tensors[key])


# --- options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trim": 0.5}, "trim"),
        ({"trim": -0.1}, "trim"),
        ({"trim": float("nan")}, "trim"),
        ({"trim": True}, "trim"),
        ({"f": -1}, "f must"),
        ({"f": 1.0}, "f must"),
        ({"m": 0}, "m must"),
        ({"clip": 0.0}, "clip"),
        ({"clip": float("inf")}, "clip"),
        ({"clip": -1}, "clip"),
    ],
)
def test_rule_options_reject_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        RuleOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "options", "match"),
    [
        ("trimmed-mean", RuleOptions(), "needs trim"),
        ("multi-krum", RuleOptions(f=1), "needs m"),
        ("multi-krum", RuleOptions(), "needs f and m"),
        ("median", RuleOptions(max_samples=5), "does not take max_samples"),
        ("fedavg", RuleOptions(trim=0.1), "does not take trim"),
        ("median", RuleOptions(f=1, m=1), "does not take f or m"),
    ],
)
def test_options_that_do_not_fit_the_rule_are_refused(rule: str, options: RuleOptions, match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        check_options(rule, options)


def test_aggregate_round_refuses_bad_options_before_reading_updates() -> None:
    # Prepare: the updates are garbage, so only an early check can explain the error.
    base = encode_model({"w": np.zeros(2, np.float32)})

    # Execute / Assert
    with pytest.raises(AggregationError, match="needs trim"):
        aggregate_round("trimmed-mean", base, [b"junk"])
    with pytest.raises(AggregationError, match="not both"):
        aggregate_round("fedavg", base, [b"junk"], options=RuleOptions(), max_samples=3)


def test_registry_names_the_four_rules() -> None:
    assert dict(RULES) == {
        "fedavg": fedavg.aggregate,
        "median": median.aggregate,
        "trimmed-mean": trimmed_mean.aggregate,
        "multi-krum": krum.aggregate,
    }


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_runs_a_round_with_a_rejected_update(rule: str) -> None:
    # Prepare
    rng = np.random.default_rng(11)
    base = encode_model({k: np.zeros(s, np.float32) for k, s in SHAPES.items()})
    good = [
        encode_update({k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in SHAPES.items()},
                      num_samples=3, task=1, round=1, base="b")
        for _ in range(4)
    ]

    # Execute
    result = aggregate_round(rule, base, good + [b"not safetensors"], options=ROBUST.get(rule, RuleOptions(clip=0.05)))

    # Assert
    assert result.accepted == [True] * 4 + [False]
    assert result.scores_wad[-1] == 0
    assert any(s > 0 for s in result.scores_wad[:4])
