"""aggregate_round and aggregate_files: hostile updates, fallbacks, files."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from aggregation import AggregationError, InvalidModelError, UnknownRuleError, aggregate_files, aggregate_round
from aggregation.safetensors_io import write_safetensors
from aggregation.update import decode_model, encode_model, encode_update

SHAPES = {"fc.bias": (4,), "fc.weight": (4, 3)}


def weights(value: float) -> dict[str, np.ndarray]:
    return {name: np.full(shape, value, np.float32) for name, shape in SHAPES.items()}


def update(value: float, num_samples: int = 1) -> bytes:
    return encode_update(weights(value), num_samples=num_samples, task=1, round=1, base="bafy")


def hostile_updates() -> dict[str, bytes]:
    good = update(0.5)
    return {
        "pickle": pickle.dumps(weights(0.5)),
        "truncated": good[:-4],
        "missing key": write_safetensors({"fc.bias": np.zeros(4, np.float32)}),
        "wrong shape": write_safetensors({"fc.bias": np.zeros(4, np.float32), "fc.weight": np.zeros((3, 4), np.float32)}),
        "float64": safetensors.numpy.save({name: np.zeros(shape) for name, shape in SHAPES.items()}),
        "nan": write_safetensors({**weights(0.5), "fc.bias": np.full(4, np.nan, np.float32)}),
        "too large a value": write_safetensors(weights(1000.0)),
        "bad num_samples": write_safetensors(weights(0.5), {"num_samples": "lots"}),
        "lying header": struct.pack("<Q", 2**40) + json.dumps({"fc.bias": {}}).encode(),
        "oversized": update(0.5) + b" " * 100,
    }


def test_hostile_updates_are_rejected_and_the_rest_aggregated() -> None:
    # Prepare: hostile updates interleaved with two good ones.
    base = encode_model(weights(1.0))
    hostile = hostile_updates()
    good = [update(0.5, 1), update(-0.25, 3)]
    updates = [good[0], *hostile.values(), good[1]]

    # Execute
    result = aggregate_round("fedavg", base, updates, max_update_bytes=len(good[0]) + 50)
    clean = aggregate_round("fedavg", base, good)

    # Assert
    assert result.model == clean.model
    assert result.accepted == [True] + [False] * len(hostile) + [True]
    assert result.errors[0] is None and result.errors[-1] is None
    assert all(isinstance(e, str) and e for e in result.errors[1:-1])
    assert result.scores_wad[1:-1] == [0] * len(hostile)
    assert [result.scores_wad[0], result.scores_wad[-1]] == clean.scores_wad
    model, _ = decode_model(result.model, 2**20)
    assert all(np.all(model[name] == np.float32(1.0 + (0.5 - 0.75) / 4)) for name in SHAPES)


def test_without_valid_updates_the_model_is_the_base_reencoded() -> None:
    # Prepare: a base written by the safetensors library, not canonically.
    base_weights = {name: np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 7 for name, shape in SHAPES.items()}
    base = safetensors.numpy.save(base_weights)

    # Execute
    result = aggregate_round("fedavg", base, list(hostile_updates().values()), max_update_bytes=200)
    empty = aggregate_round("fedavg", base, [])

    # Assert
    assert result.model == empty.model == encode_model(base_weights)
    assert result.model != base
    assert not any(result.accepted)
    assert result.scores_wad == [0] * len(result.accepted)
    assert empty.scores_wad == empty.accepted == empty.errors == []


def test_aggregate_round_is_a_pure_function() -> None:
    # Prepare
    base = encode_model(weights(0.1))
    updates = [update(0.3, 2), update(-0.2, 5), update(0.05, 1)]

    # Execute
    first = aggregate_round("fedavg", base, updates, max_samples=4, metadata={"round": "7"})
    second = aggregate_round("fedavg", base, list(updates), max_samples=4, metadata={"round": "7"})

    # Assert
    assert first == second
    assert decode_model(first.model, 2**20)[1] == {"round": "7"}


def test_max_samples_changes_the_aggregate() -> None:
    # Prepare
    base = encode_model(weights(0.0))
    updates = [update(1.0, 1), update(-1.0, 100)]

    # Execute
    capped = aggregate_round("fedavg", base, updates, max_samples=1)
    uncapped = aggregate_round("fedavg", base, updates)

    # Assert
    assert all(not v.any() for v in decode_model(capped.model, 2**20)[0].values())
    assert capped.model != uncapped.model


def test_invalid_base_model_and_unknown_rule_raise() -> None:
    # Execute / Assert
    with pytest.raises(InvalidModelError):
        aggregate_round("fedavg", b"not a model", [update(0.5)])
    with pytest.raises(InvalidModelError):
        aggregate_round("fedavg", write_safetensors(weights(200.0)), [update(0.5)])
    with pytest.raises(UnknownRuleError):
        aggregate_round("median-of-nothing", encode_model(weights(0.0)), [update(0.5)])
    with pytest.raises(AggregationError, match="max_samples"):
        aggregate_round("fedavg", encode_model(weights(0.0)), [update(0.5)], max_samples=0)


def test_aggregate_files_writes_the_model(tmp_path: Path) -> None:
    # Prepare
    base_path = tmp_path / "base.safetensors"
    base_path.write_bytes(encode_model(weights(1.0)))
    paths = []
    for i, payload in enumerate([update(0.5, 2), b"junk", update(-0.5, 2)]):
        path = tmp_path / f"u{i}.safetensors"
        path.write_bytes(payload)
        paths.append(path)
    out = tmp_path / "out.safetensors"

    # Execute
    result = aggregate_files("fedavg", base_path, paths, out, max_samples=1)

    # Assert
    assert out.read_bytes() == result.model
    assert result.model == aggregate_round("fedavg", base_path.read_bytes(), [p.read_bytes() for p in paths]).model
    assert result.accepted == [True, False, True]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_aggregate_files_rejects_oversized_files_without_reading_them_whole(tmp_path: Path) -> None:
    # Prepare
    base_path = tmp_path / "base.safetensors"
    base_path.write_bytes(encode_model(weights(1.0)))
    big = tmp_path / "big.safetensors"
    big.write_bytes(update(0.5) + b"\0" * 10_000)

    # Execute
    result = aggregate_files("fedavg", base_path, [big], tmp_path / "out.safetensors", max_update_bytes=1000)

    # Assert
    assert result.accepted == [False]
    assert "over the limit of 1000" in (result.errors[0] or "")


def test_an_update_must_say_what_the_round_claims_for_it() -> None:
    # Prepare: three updates for task 1 round 1 on base "bafy"; the round's claims for each
    base = encode_model(weights(1.0))
    updates = [update(0.5, 2), update(0.25, 3), write_safetensors(weights(0.5))]  # the last states nothing
    claims = [{"task": "1", "round": "1", "base": "bafy", "num_samples": n} for n in ("2", "4", "1")]

    # Execute
    result = aggregate_round("fedavg", base, updates, claims=claims)

    # Assert: the first is as claimed; the second says 3 samples, not 4; the third says nothing
    assert result.accepted == [True, False, False]
    assert "num_samples '3'" in result.errors[1] and "base nothing" in result.errors[2]
    assert result.model == aggregate_round("fedavg", base, updates[:1]).model
    with pytest.raises(AggregationError, match="claims for"):
        aggregate_round("fedavg", base, updates, claims=claims[:2])


def directed(sign: float) -> bytes:
    """An update along a fixed direction (varied per coordinate, so cosines are meaningful)."""
    values = {name: sign * np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32).reshape(shape) / 100 for name, shape in SHAPES.items()}
    return encode_update(values, num_samples=1, task=1, round=1, base="bafy")


@pytest.mark.parametrize("rule", ["fedavg", "median"])
def test_an_update_whose_sender_has_not_earned_is_scored_but_not_aggregated(rule: str) -> None:
    # Prepare: two senders with a history, and a fresh identity publishing the negation
    base = encode_model(weights(1.0))
    honest = [directed(1.0), directed(0.5)]  # distinct: identical updates in one round score 0
    fresh = directed(-1.0)

    # Execute
    gated = aggregate_round(rule, base, [honest[0], fresh, honest[1]], earned=[True, False, True])
    alone = aggregate_round(rule, base, honest)
    open_door = aggregate_round(rule, base, [honest[0], fresh, honest[1]])

    # Assert: the model is the earned senders' alone; the fresh update is still validated and scored
    assert gated.model == alone.model != open_door.model
    assert gated.accepted == [True, True, True]
    assert gated.scores_wad[1] == 0 and gated.scores_wad[0] == gated.scores_wad[2] > 0


def test_when_no_valid_update_has_earned_every_valid_one_is_aggregated() -> None:
    # A new federation's first round: nobody has a history yet. Also when the only earned
    # update is invalid: the round still moves.
    base = encode_model(weights(1.0))
    good = [update(0.5), update(-0.25)]

    fresh = aggregate_round("fedavg", base, good, earned=[False, False])
    invalid_earned = aggregate_round("fedavg", base, [b"junk", *good], earned=[True, False, False])

    assert fresh.model == aggregate_round("fedavg", base, good).model == invalid_earned.model


def test_earned_flags_must_match_the_updates() -> None:
    with pytest.raises(AggregationError, match="2 earned flags for 1 updates"):
        aggregate_round("fedavg", encode_model(weights(1.0)), [update(0.5)], earned=[True, True])
