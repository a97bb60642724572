"""Parity with Flower's reference aggregation (flwr.server.strategy.aggregate).

Tolerances, in quanta q = 2**-32 (the fixed-point grid):

* Flower fed the grid values (the float32 inputs after our to_fixed, as
  float64): our result is Flower's real-valued answer rounded once to the
  grid, so |ours - flwr| <= 1/2 q; Flower's own float64 arithmetic adds less
  than 2**-20 q here (|values| < 1). For median with odd n and for Krum's
  selection there is no rounding at all.
* Flower fed the raw float32 inputs as float64: each input is also rounded
  to the grid (<= 1/2 q, and a mean or an order statistic of rounded values
  moves by at most that), so |ours - flwr| <= 1 q.
* Flower fed float32, as in a real deployment: Flower's float32 arithmetic
  dominates; we check |ours - flwr| <= 1 q + 4 n ulp32(max|x|).

Multi-Krum must select exactly the same updates (no ties in random data), so
its result is within the same bounds as FedAvg of the selected set.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    # flwr imports typer, which trips a click deprecation warning on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from flwr.server.strategy.aggregate import aggregate, aggregate_krum, aggregate_median, aggregate_trimmed_avg

from aggregation.abc import FixedUpdate, RuleOptions
from aggregation.fedavg import SAMPLE_CAP_FACTOR, lower_median
from aggregation.fixedpoint import FRACTION_BITS, to_fixed
from aggregation.rules import apply_rule

SHAPES = {"a.weight": (3, 17), "b.bias": (5,)}
KEYS = sorted(SHAPES)
QUANTUM = 2.0**-FRACTION_BITS
FLOAT64_SLACK = 2.0**-20  # in quanta


def make_round(seed: int, n: int) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """n float32 updates at mixed scales (values off the 2**-32 grid included), and sample counts."""
    rng = np.random.default_rng(seed)
    scales = rng.choice([1e-4, 1e-2, 0.3], size=n)
    updates = [{k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()} for scale in scales]
    return updates, [int(rng.integers(1, 500)) for _ in range(n)]


def ours(rule: str, options: RuleOptions, updates: list[dict[str, np.ndarray]], samples: list[int]) -> list[np.ndarray]:
    fixed = [FixedUpdate({k: to_fixed(u[k]) for k in KEYS}, s) for u, s in zip(updates, samples)]
    result = apply_rule(rule, fixed, options)
    return [result[k] for k in KEYS]


def flower_on(
    fn: Callable[[list[tuple[list[np.ndarray], int]]], list[np.ndarray]],
    updates: list[dict[str, np.ndarray]],
    samples: list[int],
    *,
    grid: bool,
) -> list[np.ndarray]:
    """Flower on float64 copies of the inputs; with grid=True, of their fixed-point values."""
    def convert(x: np.ndarray) -> np.ndarray:
        return to_fixed(x) * QUANTUM if grid else x.astype(np.float64)

    # Flower weights by the raw counts; ours caps them at SAMPLE_CAP_FACTOR x the median claim
    # (#16), a protocol rule rather than arithmetic, so Flower is given the capped counts.
    cap = SAMPLE_CAP_FACTOR * lower_median(samples)
    return fn([([convert(u[k]) for k in KEYS], min(s, cap)) for u, s in zip(updates, samples)])


def gap_in_quanta(mine: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(q - np.asarray(r, np.float64) / QUANTUM))) for q, r in zip(mine, theirs))


CASES: dict[str, tuple[RuleOptions, Callable[..., list[np.ndarray]]]] = {
    "fedavg": (RuleOptions(), aggregate),
    "median": (RuleOptions(), aggregate_median),
    "trimmed-mean": (RuleOptions(trim=0.2), lambda r: aggregate_trimmed_avg(r, 0.2)),
    "multi-krum": (RuleOptions(f=1, m=3), lambda r: aggregate_krum(r, 1, 3)),
}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 12), rule=st.sampled_from(sorted(CASES)))
def test_rules_match_flower_on_grid_values_within_half_a_quantum(seed: int, n: int, rule: str) -> None:
    # Prepare
    updates, samples = make_round(seed, n)
    options, flower = CASES[rule]

    # Execute
    mine = ours(rule, options, updates, samples)
    theirs = flower_on(flower, updates, samples, grid=True)

    # Assert
    gap = gap_in_quanta(mine, theirs)
    if rule == "median" and n % 2:
        assert gap == 0.0  # the median of an odd count is one of the inputs
    assert gap <= 0.5 + FLOAT64_SLACK


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 12), rule=st.sampled_from(sorted(CASES)))
def test_rules_match_flower_on_raw_inputs_within_one_quantum(seed: int, n: int, rule: str) -> None:
    # Prepare
    updates, samples = make_round(seed, n)
    options, flower = CASES[rule]

    # Execute
    mine = ours(rule, options, updates, samples)
    theirs = flower_on(flower, updates, samples, grid=False)

    # Assert
    assert gap_in_quanta(mine, theirs) <= 1.0 + FLOAT64_SLACK


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rules_match_flower_in_float32_within_its_own_rounding(rule: str) -> None:
    # Prepare
    n = 9
    updates, samples = make_round(42, n)
    options, flower = CASES[rule]

    # Execute
    mine = ours(rule, options, updates, samples)
    cap = SAMPLE_CAP_FACTOR * lower_median(samples)
    theirs = flower([([u[k] for k in KEYS], min(s, cap)) for u, s in zip(updates, samples)])

    # Assert
    largest = max(float(np.max(np.abs(u[k]))) for u in updates for k in KEYS)
    ulp = float(np.spacing(np.float32(largest)))
    assert all(r.dtype == np.float32 for r in theirs)
    assert gap_in_quanta(mine, theirs) <= 1.0 + 4 * n * ulp / QUANTUM


@pytest.mark.parametrize("seed", range(5))
def test_multi_krum_rejects_the_same_attackers_as_flower(seed: int) -> None:
    # Prepare: 7 honest updates and 2 far-off attackers; f = 2, keep m = 5.
    rng = np.random.default_rng(seed)
    honest, samples = make_round(seed, 7)
    attackers = [{k: (rng.standard_normal(s) * 5).astype(np.float32) for k, s in SHAPES.items()} for _ in range(2)]
    updates, counts = honest + attackers, samples + [1000, 1000]

    # Execute
    mine = ours("multi-krum", RuleOptions(f=2, m=5), updates, counts)
    theirs = flower_on(lambda r: aggregate_krum(r, 2, 5), updates, counts, grid=True)

    # Assert: same selection (else the gap would be huge), then one rounding.
    assert gap_in_quanta(mine, theirs) <= 0.5 + FLOAT64_SLACK
    assert max(float(np.max(np.abs(q))) for q in mine) * QUANTUM < 1.0
