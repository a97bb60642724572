"""FedAvg [McMahan et al., 2017] in exact fixed point, and the rule registry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import fedavg
from aggregation.abc import FixedUpdate, RuleOptions
from aggregation.api import aggregate_round
from aggregation.errors import AggregationError, UnknownRuleError
from aggregation.fixedpoint import to_fixed
from aggregation.rules import RULES, get_rule
from aggregation.update import decode_model, encode_model, encode_update

SHAPES = {"conv.weight": (2, 3, 3), "fc.bias": (4,), "fc.weight": (4, 5)}


def random_tensors(rng: np.random.Generator, scale: float) -> dict[str, np.ndarray]:
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in SHAPES.items()}


def fixed(tensors: dict[str, np.ndarray], num_samples: int = 1) -> FixedUpdate:
    return FixedUpdate(tensors={k: to_fixed(v) for k, v in tensors.items()}, num_samples=num_samples)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), weights=st.lists(st.integers(1, 10**6), min_size=1, max_size=6))
def test_fedavg_of_identical_updates_is_that_update(seed: int, weights: list[int]) -> None:
    # Prepare
    update = random_tensors(np.random.default_rng(seed), 0.1)

    # Execute
    result = fedavg.aggregate([fixed(update, w) for w in weights], RuleOptions())

    # Assert
    for name in SHAPES:
        assert np.array_equal(result[name], to_fixed(update[name]))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), weights=st.lists(st.integers(1, 1000), min_size=1, max_size=6))
def test_fedavg_is_within_one_quantum_of_the_float64_weighted_mean(seed: int, weights: list[int]) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    updates = [random_tensors(rng, 0.05) for _ in weights]

    # Execute
    inputs = [fixed(u, w) for u, w in zip(updates, weights)]
    result = fedavg.aggregate(inputs, RuleOptions())
    capped = fedavg.sample_weights(inputs, None)  # claims above 5 medians count as 5 medians (#16)

    # Assert: in quanta of 2**-32; float64 error here is ~1e-7 quanta, and
    # to_fixed's own rounding of each input adds at most half a quantum.
    for name in SHAPES:
        reference = np.average(np.stack([u[name].astype(np.float64) for u in updates]), axis=0, weights=capped)
        assert np.max(np.abs(result[name] - reference * 2**32)) <= 1.0


def test_fedavg_weights_by_num_samples() -> None:
    # Prepare: 1 sample of +1 and 3 samples of -1 average to -0.5.
    ones = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}
    minus = {name: -np.ones(shape, np.float32) for name, shape in SHAPES.items()}

    # Execute
    result = fedavg.aggregate([fixed(ones, 1), fixed(minus, 3)], RuleOptions())

    # Assert
    for name, shape in SHAPES.items():
        assert np.array_equal(result[name], np.full(shape, -(2**31), np.int64))


def test_max_samples_caps_the_weights() -> None:
    # Prepare: a claim of 10**6 samples, capped to 1, weighs as much as 1 sample.
    ones = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}
    minus = {name: -np.ones(shape, np.float32) for name, shape in SHAPES.items()}

    # Execute
    capped = fedavg.aggregate([fixed(ones, 1), fixed(minus, 10**6)], RuleOptions(max_samples=1))
    uncapped = fedavg.aggregate([fixed(ones, 1), fixed(minus, 10**6)], RuleOptions())

    # Assert
    assert all(not capped[name].any() for name in SHAPES)
    assert all((uncapped[name] < -(2**31)).all() for name in SHAPES)


@pytest.mark.parametrize("max_samples", [0, -1, True, 1.5])
def test_invalid_max_samples_is_rejected(max_samples: object) -> None:
    # Execute / Assert
    with pytest.raises(AggregationError, match="max_samples"):
        RuleOptions(max_samples=max_samples)  # type: ignore[arg-type]


def test_fedavg_needs_an_update() -> None:
    # Execute / Assert
    with pytest.raises(AggregationError):
        fedavg.aggregate([], RuleOptions())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 6), data=st.data())
def test_aggregate_round_model_is_permutation_invariant(seed: int, n: int, data: st.DataObject) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    base = encode_model(random_tensors(rng, 1.0))
    updates = [
        encode_update(random_tensors(rng, 0.01), num_samples=int(rng.integers(1, 100)), task=1, round=1, base="b")
        for _ in range(n)
    ]
    order = data.draw(st.permutations(range(n)))

    # Execute
    straight = aggregate_round("fedavg", base, updates)
    permuted = aggregate_round("fedavg", base, [updates[i] for i in order])

    # Assert: same model bytes; scores follow their updates.
    assert permuted.model == straight.model
    assert permuted.scores_wad == [straight.scores_wad[i] for i in order]


def test_aggregate_round_adds_the_fedavg_delta_to_the_base() -> None:
    # Prepare
    rng = np.random.default_rng(3)
    base_weights = random_tensors(rng, 1.0)
    deltas = [random_tensors(rng, 0.01) for _ in range(3)]
    updates = [encode_update(d, num_samples=i + 1, task=1, round=1, base="b") for i, d in enumerate(deltas)]

    # Execute
    result = aggregate_round("fedavg", encode_model(base_weights), updates)
    model, _ = decode_model(result.model, 2**20)

    # Assert: within half a float32 ulp plus a quantum of the float64 computation.
    for name in SHAPES:
        expected = base_weights[name].astype(np.float64) + np.average(
            np.stack([d[name].astype(np.float64) for d in deltas]), axis=0, weights=[1, 2, 3]
        )
        assert np.allclose(model[name], expected, rtol=2**-23, atol=2**-31)


def test_registry_has_fedavg_and_rejects_unknown_rules() -> None:
    # Execute / Assert
    assert RULES["fedavg"] is fedavg.aggregate
    assert get_rule("fedavg") is fedavg.aggregate
    with pytest.raises(UnknownRuleError, match="unknown aggregation rule 'krum'; known: fedavg"):
        get_rule("krum")
