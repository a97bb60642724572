"""Contribution scores: exact clipped cosine similarity in WAD."""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.api import aggregate_round
from aggregation.fixedpoint import Q_BOUND
from aggregation.scores import WAD, contribution_scores, cosine_wad
from aggregation.update import encode_model, encode_update

values = st.integers(min_value=-(Q_BOUND - 1), max_value=Q_BOUND - 1)
SHAPES = {"a": (3,), "b": (2, 2)}


def decimal_cosine_wad(u: list[int], a: list[int]) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 120
        dot = sum(Decimal(x) * Decimal(y) for x, y in zip(u, a))
        norms = sum(Decimal(x) ** 2 for x in u) * sum(Decimal(y) ** 2 for y in a)
        return max(Decimal(0), Decimal(WAD) * dot / norms.sqrt())


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(1, 10))
def test_cosine_wad_is_the_floor_of_the_exact_cosine(data: st.DataObject, size: int) -> None:
    # Prepare
    u = data.draw(st.lists(values, min_size=size, max_size=size))
    a = data.draw(st.lists(values, min_size=size, max_size=size))

    # Execute
    score = cosine_wad(np.array(u, np.int64), np.array(a, np.int64))

    # Assert: 0 <= score <= WAD and it is floor(WAD * cos) up to the reference's precision.
    assert 0 <= score <= WAD
    if any(u) and any(a):
        reference = decimal_cosine_wad(u, a)
        assert score <= reference < score + 1 + Decimal("1e-60")
    else:
        assert score == 0


@settings(max_examples=200, deadline=None)
@given(vector=st.lists(st.integers(-(2**30), 2**30), min_size=1, max_size=10).filter(any), k=st.integers(1, 256))
def test_parallel_vectors_score_wad_and_opposite_vectors_zero(vector: list[int], k: int) -> None:
    # Prepare
    u = np.array(vector, np.int64)

    # Execute / Assert
    assert cosine_wad(u, u * k) == WAD
    assert cosine_wad(u * k, u) == WAD
    assert cosine_wad(u, -u * k) == 0


def test_orthogonal_and_zero_vectors_score_zero() -> None:
    # Prepare
    x = np.array([1, 0, 0], np.int64)
    y = np.array([0, 5, 0], np.int64)
    zero = np.zeros(3, np.int64)

    # Execute / Assert
    assert cosine_wad(x, y) == 0
    assert cosine_wad(x, zero) == 0
    assert cosine_wad(zero, x) == 0


def test_known_angle() -> None:
    # Prepare: 45 degrees, cos = 1/sqrt(2) = 0.70710678118654752440...
    # Execute / Assert
    assert cosine_wad(np.array([1, 0], np.int64), np.array([1, 1], np.int64)) == 707106781186547524


def test_duplicates_score_zero_and_the_first_copy_keeps_its_score() -> None:
    # Prepare
    target = {"a": np.array([1, 2, 3], np.int64)}
    first = {"a": np.array([1, 2, 4], np.int64)}
    other = {"a": np.array([3, 2, 1], np.int64)}

    # Execute
    scores = contribution_scores([first, other, {"a": first["a"].copy()}, None, first], target)

    # Assert
    assert scores[0] == cosine_wad(first["a"], target["a"]) > 0
    assert scores[1] == cosine_wad(other["a"], target["a"]) > 0
    assert scores[2:] == [0, 0, 0]


def updates_for(deltas: list[dict[str, np.ndarray]]) -> list[bytes]:
    return [encode_update(d, num_samples=1, task=1, round=1, base="b") for d in deltas]


def test_single_update_scores_wad_in_a_round() -> None:
    # Prepare: the aggregate of one update is that update.
    base = encode_model({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    update = {name: np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape) for name, shape in SHAPES.items()}

    # Execute
    result = aggregate_round("fedavg", base, updates_for([update]))

    # Assert
    assert result.scores_wad == [WAD]


def test_round_scores_opposite_duplicate_and_rejected_updates_zero() -> None:
    # Prepare: two agreeing updates outweigh one opposite update; one copies
    # an earlier update byte for byte; one is not a safetensors file at all.
    base = encode_model({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    up = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}
    up2 = {name: np.full(shape, 0.25, np.float32) for name, shape in SHAPES.items()}
    down = {name: np.full(shape, -0.1, np.float32) for name, shape in SHAPES.items()}
    encoded = updates_for([up, down, up2])
    updates = [encoded[0], encoded[1], encoded[2], encoded[0], b"\x80\x04junk"]

    # Execute
    result = aggregate_round("fedavg", base, updates)

    # Assert
    assert result.scores_wad == [WAD, 0, WAD, 0, 0]
    assert result.accepted == [True, True, True, True, False]


def test_value_identical_update_with_other_bytes_is_a_duplicate() -> None:
    # Prepare: same values (0.0 vs -0.0, another num_samples), different bytes.
    base = encode_model({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    values = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}
    values["a"][0] = 0.0
    copy = {name: array.copy() for name, array in values.items()}
    copy["a"][0] = -0.0
    first = encode_update(values, num_samples=1, task=1, round=1, base="b")
    second = encode_update(copy, num_samples=9, task=1, round=1, base="b")
    assert first != second

    # Execute
    result = aggregate_round("fedavg", base, [first, second])

    # Assert
    assert result.scores_wad == [WAD, 0]
    assert result.accepted == [True, True]
