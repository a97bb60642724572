"""Issue #16: one node's sample claim cannot outweigh the round's evidence.

A node may claim 10**6 samples on chain and in its file alike (the two agree, so
test_update_claims does not catch it); before the median cap, the task's max_samples
(2**20) let that one claim take ~99.9% of the FedAvg and Multi-Krum weight.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import RuleOptions, aggregate_round
from aggregation.abc import FixedUpdate
from aggregation.fedavg import SAMPLE_CAP_FACTOR, lower_median, sample_weights
from aggregation.krum import select
from aggregation.update import decode_model, encode_model, encode_update
from node.taskspec import TaskSpec
from node.training.data import load_digits_split, partition

SHAPE = (50, 20)  # 1,000 coordinates
HONEST_SHIFT = 0.01  # every honest delta's mean over its coordinates
POISON_SHIFT = 5e-4  # the liar's delta is HONEST_SHIFT + POISON_SHIFT everywhere
# Seven honest shards from the robustness grid's Dirichlet(0.5) split (partition-seed 7).
HONEST_SIZES = [72, 143, 248, 71, 108, 64, 194]
LIAR_CLAIM = 10**6


def _round(sizes: list[int], liar: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Honest deltas: HONEST_SHIFT plus zero-mean noise; the liar's: a constant, the most central
    update of all (no noise), so Multi-Krum keeps it. Its weight share is then readable off the
    aggregate's mean: HONEST_SHIFT + share * POISON_SHIFT."""
    rng = np.random.default_rng(16)
    deltas = []
    for _ in sizes:
        noise = rng.normal(0.0, 1e-3, SHAPE)
        deltas.append((HONEST_SHIFT + noise - noise.mean()).astype(np.float32))
    deltas.append(np.full(SHAPE, HONEST_SHIFT + POISON_SHIFT, np.float32))
    files = [encode_update({"w": d}, num_samples=n, task=1, round=1, base="bafy") for d, n in zip(deltas, [*sizes, liar])]
    return deltas, files


def _liar_share(rule: str, options: RuleOptions, sizes: list[int]) -> float:
    deltas, files = _round(sizes, LIAR_CLAIM)
    base = encode_model({"w": np.zeros(SHAPE, np.float32)})
    result = aggregate_round(rule, base, files, options=options)
    assert all(result.accepted)
    aggregate = decode_model(result.model, max_bytes=len(result.model))[0]["w"].astype(np.float64)
    honest_means = [float(d.astype(np.float64).mean()) for d in deltas[:-1]]
    assert max(abs(m - HONEST_SHIFT) for m in honest_means) < 1e-7  # the read-off below is exact enough
    return (float(aggregate.mean()) - HONEST_SHIFT) / POISON_SHIFT


def test_a_huge_sample_claim_cannot_dominate_fedavg() -> None:
    # Prepare: the default task's options (max_samples 2**20).
    options = TaskSpec(rule="fedavg").rule_options()
    median = lower_median([*HONEST_SIZES, LIAR_CLAIM])  # 108: the liar is the largest claim

    # Execute
    share = _liar_share("fedavg", options, HONEST_SIZES)

    # Assert: the liar counts as SAMPLE_CAP_FACTOR median shards, less than the honest together
    # (before the cap: 10**6 / (10**6 + 900), a share of 0.999).
    cap = SAMPLE_CAP_FACTOR * median
    assert share == pytest.approx(cap / (cap + sum(HONEST_SIZES)), abs=2e-3)
    assert share < 0.5


def test_equal_honest_shards_bound_the_liar_to_c_over_c_plus_seven() -> None:
    # Prepare: the IID split's shard size for every honest node.
    options = TaskSpec(rule="fedavg").rule_options()

    # Execute
    share = _liar_share("fedavg", options, [120] * 7)

    # Assert
    assert share <= SAMPLE_CAP_FACTOR / (SAMPLE_CAP_FACTOR + 7) + 2e-3


def test_a_huge_sample_claim_cannot_dominate_multi_krum() -> None:
    # Prepare: n = 8, f = 2, m = 6 (spec_for_rule's defaults for 8); the liar is the most central
    # update, so Krum keeps it and only its weight decides how far it pulls.
    spec = TaskSpec(rule="multi-krum", f=2, m=6)
    deltas, files = _round(HONEST_SIZES, LIAR_CLAIM)
    fixed = [FixedUpdate.from_float32({"w": d}, n) for d, n in zip(deltas, [*HONEST_SIZES, LIAR_CLAIM])]
    kept = select(fixed, 2, 6)
    assert len(fixed) - 1 in kept

    # Execute
    share = _liar_share("multi-krum", spec.rule_options(), HONEST_SIZES)

    # Assert: capped by the median of all 8 claims, not of the 6 kept.
    cap = SAMPLE_CAP_FACTOR * lower_median([*HONEST_SIZES, LIAR_CLAIM])
    honest_kept = sum(HONEST_SIZES[i] for i in kept if i < len(HONEST_SIZES))
    assert share == pytest.approx(cap / (cap + honest_kept), abs=2e-3)
    assert share < 0.55  # 0.52 here: Krum dropped two honest updates; 0.998 before the cap


@pytest.mark.parametrize("alpha", [None, 0.5, 0.1])
def test_the_cap_leaves_the_grids_honest_shards_alone(alpha: float | None) -> None:
    # Prepare: the robustness grid's shards (12 nodes, partition-seed 7), and the 7 of them (the
    # grid seats at least 7) with the lowest median that still hold the largest shard.
    train, _ = load_digits_split(seed=7)
    sizes = sorted(len(s) for s in partition(train, 12, alpha, 7))
    low = sizes[:6] + sizes[-1:]
    updates = [FixedUpdate.from_float32({"w": np.zeros(1, np.float32)}, n) for n in low]

    # Execute
    weights = sample_weights(updates, TaskSpec().max_samples)

    # Assert: nobody is capped, so FedAvg and Multi-Krum compute what they computed before.
    assert weights == low


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 2**32), min_size=1, max_size=40), st.integers(1, 2**33))
def test_weights_are_exact_bounded_and_order_free(claims: list[int], max_samples: int) -> None:
    updates = [FixedUpdate.from_float32({"w": np.zeros(1, np.float32)}, n) for n in claims]
    weights = sample_weights(updates, max_samples)
    median = sorted(claims)[(len(claims) - 1) // 2]
    assert weights == [min(n, max_samples, SAMPLE_CAP_FACTOR * median) for n in claims]
    assert all(isinstance(w, int) and 1 <= w <= n for w, n in zip(weights, claims))
    assert sorted(sample_weights(updates[::-1], max_samples)) == sorted(weights)
