"""Contribution scores: exact clipped cosine similarity in WAD, relative to the round's median."""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.api import aggregate_round
from aggregation.fixedpoint import Q_BOUND
from aggregation.scores import WAD, contribution_scores, cosine_wad, relative_score
from aggregation.update import Update, encode_model, encode_update

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


def test_scores_are_cosines_relative_to_the_rounds_median_cosine() -> None:
    # Prepare: cosines with the target of about 0.99, 0.71, 0.5 and 0.
    target = {"a": np.array([1, 1, 0], np.int64)}
    deltas = [
        {"a": np.array([10, 9, 0], np.int64)},
        {"a": np.array([1, 0, 0], np.int64)},
        {"a": np.array([1, 0, 1], np.int64)},
        {"a": np.array([0, 0, 5], np.int64)},
    ]
    cosines = [cosine_wad(d["a"], target["a"]) for d in deltas]
    median = sorted(cosines)[2]  # the upper median of four

    # Execute
    scores = contribution_scores(deltas, target)

    # Assert: at or above the median 1, half of it or less 0, linear in between.
    assert median == cosines[1]
    assert scores[0] == scores[1] == WAD
    assert scores[2] == relative_score(cosines[2], median) == (2 * cosines[2] - median) * WAD // median
    assert 0 < scores[2] < WAD
    assert scores[3] == 0


def test_relative_score_bounds() -> None:
    # Execute / Assert
    assert relative_score(WAD, WAD // 2) == WAD
    assert relative_score(WAD // 4, WAD // 2) == 0
    assert relative_score(3 * WAD // 8, WAD // 2) == WAD // 2
    assert relative_score(0, 0) == 0


def test_every_copy_in_a_round_scores_zero_and_is_left_out_of_the_median() -> None:
    # Prepare: commit-reveal hides updates until every commitment is in, so identical
    # updates in one round mean collusion: all of them score 0, the first too.
    target = {"a": np.array([1, 2, 3], np.int64)}
    first = {"a": np.array([1, 2, 4], np.int64)}
    other = {"a": np.array([3, 2, 1], np.int64)}

    # Execute
    scores = contribution_scores([first, other, {"a": first["a"].copy()}, None, first], target)

    # Assert: `other` is the only fresh update, so it is its round's median.
    assert scores == [0, WAD, 0, 0, 0]


def test_a_replay_of_a_previous_round_update_scores_zero() -> None:
    # Prepare: node 1 resends its own earlier delta, node 2 another node's.
    target = {"a": np.array([1, 2, 3], np.int64), "b": np.array([1], np.int64)}
    old_1 = {"a": np.array([1, 2, 2], np.int64), "b": np.array([1], np.int64)}
    old_2 = {"a": np.array([2, 2, 3], np.int64), "b": np.array([2], np.int64)}
    # a fresh delta far from both old ones (cosine 0.85 and 0.78; REPLAY_COSINE is 0.98)
    fresh = {"a": np.array([0, 2, 4], np.int64), "b": np.array([0], np.int64)}
    near = {"a": np.array([1, 2, 2], np.int64), "b": np.array([2], np.int64)}  # same probe as old_1, not equal (cosine 0.965)

    # Execute
    scores = contribution_scores([fresh, dict(old_1), dict(old_2), near], target, previous=[old_1, None, old_2])

    # Assert
    assert scores[1] == scores[2] == 0
    assert scores[0] > 0 and scores[3] > 0
    assert contribution_scores([fresh, dict(old_1)], target)[1] > 0  # without the history it is scored


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(1, 6))
def test_scores_follow_their_updates_in_any_order(data: st.DataObject, n: int) -> None:
    # Prepare: copies score 0 wherever they stand, so the scores do not depend on the order.
    small = st.integers(-3, 3)
    deltas = [{"a": np.array(data.draw(st.lists(small, min_size=3, max_size=3)), np.int64)} for _ in range(n)]
    target = {"a": np.array(data.draw(st.lists(small, min_size=3, max_size=3)), np.int64)}
    order = data.draw(st.permutations(range(n)))

    # Execute
    scores = contribution_scores(deltas, target)
    shuffled = contribution_scores([deltas[i] for i in order], target)

    # Assert
    assert shuffled == [scores[i] for i in order]
    assert all(0 <= s <= WAD for s in scores)


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
    # another byte for byte (both score 0); one is not a safetensors file at all.
    base = encode_model({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    up = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}
    up2 = {name: np.full(shape, 0.25, np.float32) for name, shape in SHAPES.items()}
    down = {name: np.full(shape, -0.1, np.float32) for name, shape in SHAPES.items()}
    encoded = updates_for([up, down, up2])
    updates = [encoded[0], encoded[1], encoded[2], encoded[0], b"\x80\x04junk"]

    # Execute
    result = aggregate_round("fedavg", base, updates)

    # Assert
    assert result.scores_wad == [0, 0, WAD, 0, 0]
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
    assert result.scores_wad == [0, 0]
    assert result.accepted == [True, True]


def test_round_scores_a_resent_update_zero_whatever_its_metadata() -> None:
    # Prepare: last round's update, re-encoded for this round (other round, base, samples).
    base = encode_model({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    old = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}
    # a new step, not parallel to the old one (a constant tensor 0.4 would be: cosine 1, a replay)
    new = {name: np.linspace(-0.5, 0.5, int(np.prod(shape)), dtype=np.float32).reshape(shape) for name, shape in SHAPES.items()}
    earlier = encode_update(old, num_samples=3, task=1, round=1, base="a")
    resent = encode_update(old, num_samples=5, task=1, round=2, base="b")
    fresh = encode_update(new, num_samples=5, task=1, round=2, base="b")

    # Execute
    result = aggregate_round("fedavg", base, [fresh, resent], previous=[b"", earlier])
    without = aggregate_round("fedavg", base, [fresh, resent])

    # Assert: the replay scores 0 and moves nothing (scores.screen); without the history both count.
    assert result.scores_wad == [WAD, 0]
    assert without.scores_wad[1] > 0 and without.scores_wad[0] > 0
    assert result.model == aggregate_round("fedavg", base, [fresh]).model != without.model


def test_the_previous_round_given_as_its_decoded_updates_scores_as_its_files() -> None:
    # Prepare: last round aggregated `earlier` (so it holds it decoded); this round resends it.
    base = encode_model({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})
    old = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}
    new = {name: np.linspace(-0.5, 0.5, int(np.prod(shape)), dtype=np.float32).reshape(shape) for name, shape in SHAPES.items()}
    earlier = encode_update(old, num_samples=3, task=1, round=1, base="a")
    last_round = aggregate_round("fedavg", base, [earlier, b"not safetensors"])
    this_round = [encode_update(new, num_samples=5, task=1, round=2, base="b"), encode_update(old, num_samples=5, task=1, round=2, base="b")]
    wrong = Update(tensors={name: np.zeros((1,), np.float32) for name in SHAPES}, num_samples=1)

    # Execute
    from_files = aggregate_round("fedavg", base, this_round, previous=[earlier])
    from_decoded = aggregate_round("fedavg", base, this_round, previous=[last_round.decoded[0]])
    from_wrong = aggregate_round("fedavg", base, this_round, previous=[wrong])

    # Assert: the rejected file has no decoded update; a decoded one counts as its file does; one
    # that does not fit this model's shapes is skipped, like a file that does not decode.
    assert last_round.decoded[1] is None and last_round.decoded[0] is not None
    assert from_decoded.scores_wad == from_files.scores_wad == [WAD, 0]
    assert from_decoded.model == from_files.model
    assert from_wrong.scores_wad[1] > 0


def _noisy(delta: dict[str, np.ndarray], level: float, seed: int) -> dict[str, np.ndarray]:
    """`delta` plus Gaussian noise of `level` times its norm (the perturbed replay of #16)."""
    rng = np.random.default_rng(seed)
    norm = float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in delta.values())))
    size = sum(v.size for v in delta.values())
    return {k: v + np.rint(rng.normal(0, level * norm / np.sqrt(size), v.shape)).astype(np.int64) for k, v in delta.items()}


def test_a_perturbed_replay_of_a_previous_round_update_scores_zero() -> None:
    # Prepare: four nodes' deltas of last round; this round, node 1 resends its own plus noise of
    # 1e-2 and 1e-1 of its norm (two noisy copies, for two rounds of a stale free-rider), node 3
    # another node's plus 1e-1 of noise; node 0 trained again: a new step that still looks like
    # its last one (cosine ~0.9, as honest lag-1 self-cosines go; docs/robustness-history.md)
    rng = np.random.default_rng(3)
    old = [{"a": rng.integers(-(10**6), 10**6, 4000), "b": rng.integers(-(10**6), 10**6, 96)} for _ in range(4)]
    fresh = {k: v + rng.integers(-(10**6), 10**6, v.shape) // 2 for k, v in old[0].items()}
    deltas = [fresh, _noisy(old[1], 1e-2, 1), _noisy(_noisy(old[1], 1e-1, 2), 1e-1, 3), _noisy(old[2], 1e-1, 4)]
    target = {k: sum(d[k] for d in deltas) for k in ("a", "b")}
    assert all(not np.array_equal(d["a"], o["a"]) for d in deltas for o in old)  # no bit-exact replay

    # Execute
    scores = contribution_scores(deltas, target, previous=old)

    # Assert: the replays score 0; the new step is scored
    assert scores[1:] == [0, 0, 0]
    assert scores[0] == WAD
