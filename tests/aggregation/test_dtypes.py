"""Tensors beyond float32 (#15): float16, bfloat16 and integer buffers, aggregated exactly.

The format is in docs/formats.md; the code in aggregation/dtypes.py.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import InvalidModelError, RuleOptions, aggregate_round, decode_model, encode_model, encode_update
from aggregation.dtypes import (
    BFLOAT16,
    bfloat16_bits,
    bfloat16_from_bits,
    layout,
    model_delta,
    round_fixed,
)
from aggregation.torch_state import arrays_from_state_dict, state_dict_from_arrays

RULES = {
    "fedavg": RuleOptions(),
    "median": RuleOptions(),
    "trimmed-mean": RuleOptions(trim=0.2),
    "multi-krum": RuleOptions(f=1, m=3),
}


def bf16(values: np.ndarray) -> np.ndarray:
    """float32 values (exact in bfloat16) as a BFLOAT16 array."""
    return bfloat16_from_bits(np.asarray(values, np.float32).view(np.uint32) >> 16)


def batchnorm_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "bn.weight": rng.standard_normal(8).astype(np.float32),
        "bn.bias": rng.standard_normal(8).astype(np.float32),
        "bn.running_mean": rng.standard_normal(8).astype(np.float32),
        "bn.running_var": rng.random(8).astype(np.float32) + 0.5,
        "bn.num_batches_tracked": np.array(40, np.int64),
        "fc.weight": rng.standard_normal((3, 8)).astype(np.float32),
    }


def half_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"fc.weight": rng.standard_normal((4, 6)).astype(np.float16), "fc.bias": rng.standard_normal(4).astype(np.float16)}


def bfloat16_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    weight = rng.standard_normal((4, 6)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    # Round to bfloat16 with torch, an independent implementation.
    return {name: bfloat16_from_bits(torch.from_numpy(v).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
            for name, v in {"fc.weight": weight, "fc.bias": bias}.items()}


MODELS = {"batchnorm": batchnorm_model, "float16": half_model, "bfloat16": bfloat16_model}


def trained_like(base: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A node's trained weights: the base moved a little, each tensor in its own dtype."""
    out = {}
    for name, array in base.items():
        if array.dtype == BFLOAT16:
            moved = bfloat16_bits(array).astype(np.uint32) << 16
            values = moved.view(np.float32) + (rng.standard_normal(array.shape) * 0.05).astype(np.float32)
            out[name] = bf16(values)  # truncation: any bfloat16 value will do
        elif array.dtype.kind == "f":
            out[name] = (array.astype(np.float32) + rng.standard_normal(array.shape) * 0.05).astype(array.dtype)
        elif array.dtype == np.int64:
            out[name] = array + rng.integers(1, 20, array.shape)  # a batch counter
        else:
            out[name] = array.copy()
    return out


def round_inputs(kind: str, seed: int = 7) -> tuple[bytes, list[bytes]]:
    rng = np.random.default_rng(seed)
    base = MODELS[kind](rng)
    updates = [
        encode_update(model_delta(trained_like(base, rng), base), num_samples=int(rng.integers(1, 100)), task=1, round=1, base="b")
        for _ in range(5)
    ]
    return encode_model(base), updates


def test_rounding_to_float16_and_bfloat16_is_ieee_nearest_even_from_the_exact_value() -> None:
    # Prepare: random values, values near 0 (subnormals), and exact ties of both formats.
    rng = np.random.default_rng(3)
    q = np.concatenate([
        rng.integers(-(2**40) + 1, 2**40, 50_000),
        rng.integers(-(2**12), 2**12, 50_000) << rng.integers(0, 28, 50_000),
        (rng.integers(-(2**14), 2**14, 50_000) * 2 + 1) << rng.integers(0, 26, 50_000),
        np.array([0, 1, -1, 2**39, -(2**39)]),
    ])
    q = q[np.abs(q) < 2**40]
    exact = np.ldexp(q.astype(np.float64), -32)  # exact: |q| < 2**53

    # Execute
    half = round_fixed(q, "F16")
    brain = round_fixed(q, "BF16")

    # Assert: numpy's double -> half and torch's double -> bfloat16 round once, to nearest even.
    np.testing.assert_array_equal(half, exact.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(brain, torch.from_numpy(exact).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))


# sha256 of each round's new model and scores (repr of the list): the same on every machine.
PINNED = {
    ("batchnorm", "fedavg"): "2f8b21b706e0a011e803c737a3edffdfb60915057a7d6adccd13a385850c67d0",
    ("batchnorm", "median"): "365e5a94cfd1e555b71918021e7fdc1e2c63ba1c8d7abda7fc93d528572a2818",
    ("batchnorm", "multi-krum"): "1c9b0afa94cbb727621d86bd03b27dd9a52bffb8d047df2c278c4e8d7001cae1",
    ("batchnorm", "trimmed-mean"): "05100e47c347fb99f606871e074eedb85304145b02446884d0c8b63da6b82999",
    ("bfloat16", "fedavg"): "a9bb47eac674a7211fbbefa3d34fc8b97ab492b746340b36a5a136dfebe525da",
    ("bfloat16", "median"): "e00fa33dff9ff06202b65f957d21216dc166d664ad9e53bfe4f2b58bc497ed30",
    ("bfloat16", "multi-krum"): "75e05c5ae070862cdfd48169c06cb8e063d49f4c2ea2b5c2c6112aa3db591a02",
    ("bfloat16", "trimmed-mean"): "b262712239b6cbc0df7b21124f7cd63d765c22e310ac714bd6fdc6f7bf11480a",
    ("float16", "fedavg"): "652f1117211bedb8c71dd732c41cb9dea0357210351018af71c2927ebf2751c3",
    ("float16", "median"): "90d29b86b6c1644f019e5615525586bce1f13841d7d01fda351648c354c76c4f",
    ("float16", "multi-krum"): "37b13a59efb4d83feb28dfb87198672811189985d2e5a30d0f5382a8c95b976f",
    ("float16", "trimmed-mean"): "3dcd5c7b60f0c6b090799d1bde10d5d89c3e211be5731d47461fc3d52517a48f",
}


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_models_beyond_float32_aggregate_under_every_rule_the_same_bytes_every_time(
    kind: str, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    base, updates = round_inputs(kind)
    runs = []

    # Execute: twice, with one thread and with several.
    for threads in ("1", "4"):
        monkeypatch.setenv("FEDLEDGER_THREADS", threads)
        runs.append(aggregate_round(rule, base, updates, options=RULES[rule]))
        runs.append(aggregate_round(rule, base, updates, options=RULES[rule]))

    # Assert
    assert len({(r.model, tuple(r.scores_wad)) for r in runs}) == 1
    result = runs[0]
    digest = hashlib.sha256(result.model)
    digest.update(repr(result.scores_wad).encode())
    assert digest.hexdigest() == PINNED[(kind, rule)]
    assert result.errors == [None] * 5
    assert sum(result.scores_wad) > 0
    before, _ = decode_model(base, 2**20)
    after, _ = decode_model(result.model, 2**20)
    assert layout(after) == layout(before)  # every tensor keeps its dtype
    assert any(not np.array_equal(after[k].view(np.uint8), before[k].view(np.uint8)) for k in before)


def test_batchnorm_counter_is_the_base_plus_the_rounded_weighted_mean_of_the_deltas() -> None:
    # Prepare: counters 40 + 7 (3 samples) and 40 + 10 (1 sample): mean 7.75 -> 8; median of 7, 10 -> 8.5 -> 8 (even).
    rng = np.random.default_rng(1)
    base = batchnorm_model(rng)
    steps = [(7, 3), (10, 1)]
    updates = []
    for step, samples in steps:
        trained = trained_like(base, rng)
        trained["bn.num_batches_tracked"] = np.array(40 + step, np.int64)
        updates.append(encode_update(model_delta(trained, base), num_samples=samples, task=1, round=1, base="b"))

    # Execute
    averaged = decode_model(aggregate_round("fedavg", encode_model(base), updates).model, 2**20)[0]
    median = decode_model(aggregate_round("median", encode_model(base), updates).model, 2**20)[0]

    # Assert
    assert averaged["bn.num_batches_tracked"].dtype == np.int64
    assert int(averaged["bn.num_batches_tracked"]) == 48
    assert int(median["bn.num_batches_tracked"]) == 48


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_one_update_gives_back_the_trained_model_exactly(kind: str) -> None:
    # Prepare
    rng = np.random.default_rng(11)
    base = MODELS[kind](rng)
    trained = trained_like(base, rng)
    update = encode_update(model_delta(trained, base), num_samples=3, task=1, round=1, base="b")

    # Execute
    model, _ = decode_model(aggregate_round("fedavg", encode_model(base), [update]).model, 2**20)

    # Assert: bit for bit, in each tensor's own dtype.
    assert layout(model) == layout(trained)
    for name in trained:
        assert model[name].tobytes() == trained[name].tobytes(), name


def good_update(base: dict[str, np.ndarray], seed: int) -> bytes:
    delta = model_delta(trained_like(base, np.random.default_rng(seed)), base)
    return encode_update(delta, num_samples=2, task=1, round=1, base="b")


def raw_update(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    """An update file with arbitrary dtypes and bytes, as a hostile sender can write it."""
    header: dict[str, object] = {"__metadata__": {"format": "fedledger-update/1", "num_samples": "1"}}
    chunks, offset = [], 0
    for name, (dtype, shape, data) in sorted(tensors.items()):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def hostile_updates(base: dict[str, np.ndarray]) -> dict[str, bytes]:
    delta = model_delta(trained_like(base, np.random.default_rng(5)), base)

    def with_(name: str, dtype: str, array: np.ndarray) -> bytes:
        tensors = {k: ("F32" if v.dtype == np.float32 else "I64", list(v.shape), v.tobytes()) for k, v in delta.items()}
        tensors[name] = (dtype, list(np.shape(array)), np.asarray(array).tobytes())
        return raw_update(tensors)

    return {
        "float16 delta for a float16 parameter": with_("fc.bias", "F16", np.zeros(4, "<f2")),
        "NaN in the delta of a float16 parameter": with_("fc.bias", "F32", np.array([0, np.nan, 0, 0], "<f4")),
        "infinite delta of a float16 parameter": with_("fc.bias", "F32", np.array([0, np.inf, 0, 0], "<f4")),
        "float delta for the int64 counter": with_("n", "F32", np.array(1.0, "<f4")),
        "int32 delta for the int64 counter": with_("n", "I32", np.array(1, "<i4")),
        "int64 delta for a float16 parameter": with_("fc.bias", "I64", np.zeros(4, "<i8")),
        "counter overflow": with_("n", "I64", np.array(2**62, "<i8")),
        "counter delta past the fixed-point bound": with_("n", "I64", np.array(2**39, "<i8")),
        "uint8 buffer out of range": with_("mask", "I64", np.array([300, 0], "<i8")),
        "bool buffer out of range": with_("flag", "I64", np.array([2], "<i8")),
        "bool buffer below range": with_("flag", "I64", np.array([-2], "<i8")),
    }


def test_hostile_updates_to_a_mixed_dtype_model_score_zero_and_the_round_goes_on() -> None:
    # Prepare: a model with float16, int64, uint8 and bool tensors.
    base = {
        "fc.bias": np.array([0.5, -1, 2, 0], np.float16),
        "fc.weight": np.ones((4, 2), np.float16),
        "n": np.array(5, np.int64),
        "mask": np.array([3, 250], np.uint8),
        "flag": np.array([True]),
    }
    hostile = hostile_updates(base)
    updates = [good_update(base, 1), *hostile.values(), good_update(base, 2)]

    # Execute
    result = aggregate_round("fedavg", encode_model(base), updates)

    # Assert
    assert result.accepted[0] and result.accepted[-1]
    for (case, _), error, score in zip(hostile.items(), result.errors[1:-1], result.scores_wad[1:-1]):
        assert error is not None and score == 0, case
    assert result.scores_wad[0] > 0 and result.scores_wad[-1] > 0
    model, _ = decode_model(result.model, 2**20)
    assert model["mask"].dtype == np.uint8 and model["flag"].dtype == np.bool_


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"w": np.array([1, np.nan], np.float16)}, "non-finite"),
        ({"w": np.array([1, 200], np.float16)}, "128"),
        ({"w": bf16(np.array([np.inf, 0], np.float32))}, "non-finite"),
        ({"n": np.array([2**62], "<i8")}, "I64 range"),
    ],
)
def test_a_base_model_with_non_finite_or_huge_half_precision_values_is_invalid(tensors: dict, message: str) -> None:
    # Prepare: written as anyone can write it (encode_model would refuse).
    codes = {np.dtype("<f2"): "F16", np.dtype("<i8"): "I64", BFLOAT16: "BF16"}
    data = raw_update({k: (codes[v.dtype], list(v.shape), v.tobytes()) for k, v in tensors.items()})

    # Execute / Assert
    with pytest.raises(InvalidModelError, match=message):
        decode_model(data, 2**20)


def test_bool_bytes_other_than_zero_and_one_are_invalid() -> None:
    # Prepare: numpy would read byte 2 as a True unequal to True.
    data = raw_update({"flag": ("BOOL", [2], b"\x01\x02")})

    # Execute / Assert
    with pytest.raises(InvalidModelError, match="BOOL"):
        decode_model(data, 2**20)


def test_updates_differing_only_in_an_integer_buffer_are_copies() -> None:
    # Prepare: a colluder cannot dodge the copy check by changing the batch counter.
    rng = np.random.default_rng(2)
    base = batchnorm_model(rng)
    trained = trained_like(base, rng)
    other = dict(trained, **{"bn.num_batches_tracked": trained["bn.num_batches_tracked"] + 1})
    honest = [good_update(base, s) for s in (20, 21, 22)]
    copies = [encode_update(model_delta(t, base), num_samples=5, task=1, round=1, base="b") for t in (trained, other)]

    # Execute
    result = aggregate_round("fedavg", encode_model(base), honest + copies)

    # Assert
    assert result.errors == [None] * 5
    assert result.scores_wad[3:] == [0, 0]


def test_a_mixed_model_from_the_safetensors_library_reads_the_same() -> None:
    # Prepare: the library lays tensors out by alignment, not by name.
    rng = np.random.default_rng(4)
    model = {"a": rng.standard_normal(3).astype(np.float16), "b": np.arange(5, dtype=np.int64), "c": np.array([1, 0], np.uint8)}

    # Execute
    ours, _ = decode_model(safetensors.numpy.save(model), 2**20)

    # Assert
    assert layout(ours) == {"a": "F16", "b": "I64", "c": "U8"}
    for name in model:
        np.testing.assert_array_equal(ours[name], model[name])
    assert encode_model(ours) == encode_model(model)


def test_torch_batchnorm_and_half_precision_state_dicts_federate_and_load_back_strictly() -> None:
    # Prepare: BatchNorm1d (float32 + int64 counter), a float16 and a bfloat16 layer.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3).half(), torch.nn.Linear(3, 2).to(torch.bfloat16))
    base = arrays_from_state_dict(net.state_dict())
    updates = []
    for seed, batches in ((1, 4), (2, 6), (3, 9)):
        torch.manual_seed(seed)
        trained = torch.nn.Sequential(torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3).half(), torch.nn.Linear(3, 2).to(torch.bfloat16))
        trained.load_state_dict(net.state_dict())
        trained.train()
        for _ in range(batches):  # BatchNorm's running stats and counter move
            trained[0](torch.randn(16, 6))
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        delta = model_delta(arrays_from_state_dict(trained.state_dict()), base)
        updates.append(encode_update(delta, num_samples=10, task=1, round=1, base="b"))

    # Execute
    result = aggregate_round("median", encode_model(base), updates)
    model, _ = decode_model(result.model, 2**20)
    net.load_state_dict(state_dict_from_arrays(model), strict=True)

    # Assert
    assert result.errors == [None] * 3
    state = net.state_dict()
    assert int(state["0.num_batches_tracked"]) == 6  # the median of 4, 6 and 9 batches
    assert state["1.weight"].dtype == torch.float16 and state["2.weight"].dtype == torch.bfloat16
    assert not torch.equal(state["2.weight"], torch.from_numpy(np.zeros(1)))
    assert arrays_from_state_dict(state)["2.weight"].tobytes() == model["2.weight"].tobytes()


def test_clipping_scales_the_parameters_and_leaves_the_batch_counter_alone() -> None:
    # Prepare: counters move by 7 and 9; a clip far below the parameters' norm.
    rng = np.random.default_rng(8)
    base = batchnorm_model(rng)
    updates = []
    for step in (7, 9):
        trained = trained_like(base, rng)
        trained["bn.num_batches_tracked"] = np.array(40 + step, np.int64)
        updates.append(encode_update(model_delta(trained, base), num_samples=1, task=1, round=1, base="b"))

    # Execute
    clipped = decode_model(aggregate_round("fedavg", encode_model(base), updates, options=RuleOptions(clip=1e-3)).model, 2**20)[0]

    # Assert
    assert int(clipped["bn.num_batches_tracked"]) == 48
    moved = np.concatenate([(clipped[k] - base[k]).ravel() for k in base if base[k].dtype == np.float32])
    assert 0 < np.linalg.norm(moved.astype(np.float64)) <= 1e-3 * 1.001


INTEGER_CODES = {"U8": np.uint8, "I8": np.int8, "BOOL": np.bool_, "I16": np.int16}


@settings(max_examples=40, deadline=None)
@given(
    code=st.sampled_from(sorted(INTEGER_CODES)),
    rule=st.sampled_from(sorted(RULES)),
    data=st.data(),
)
def test_any_valid_integer_deltas_keep_the_buffer_in_its_range_under_every_rule(code: str, rule: str, data: st.DataObject) -> None:
    # Prepare: a base at the edges of the dtype's range and deltas anywhere inside it.
    dtype = np.dtype(INTEGER_CODES[code])
    low, high = (0, 1) if code == "BOOL" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    base_values = data.draw(st.lists(st.integers(low, high), min_size=3, max_size=3))
    base = {"w": np.zeros(2, np.float32), "b": np.array(base_values).astype(dtype)}
    count = data.draw(st.integers(1, 6))
    updates = []
    for k in range(count):
        target = data.draw(st.lists(st.integers(low, high), min_size=3, max_size=3))
        delta = {"w": np.array([k, 1], np.float32) / 8, "b": np.array(target, np.int64) - np.array(base_values, np.int64)}
        updates.append(encode_update(delta, num_samples=data.draw(st.integers(1, 50)), task=1, round=1, base="b"))

    # Execute
    result = aggregate_round(rule, encode_model(base), updates, options=RULES[rule])

    # Assert: every update is valid and the new buffer is a value of its dtype, in range.
    assert result.errors == [None] * count
    model, _ = decode_model(result.model, 2**20)
    assert model["b"].dtype == dtype
    assert low <= int(model["b"].astype(np.int64).min()) and int(model["b"].astype(np.int64).max()) <= high
