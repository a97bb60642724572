"""The update and model file formats: encode, and decode with full validation."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.errors import EncodeError, InvalidModelError, InvalidUpdateError
from aggregation.safetensors_io import write_safetensors
from aggregation.update import UPDATE_FORMAT, decode_model, decode_update, encode_model, encode_update

LIMIT = 2**20
SHAPES = {"fc.bias": (3,), "fc.weight": (3, 2)}


def delta(scale: float = 0.5) -> dict[str, np.ndarray]:
    return {name: np.full(shape, scale, dtype=np.float32) for name, shape in SHAPES.items()}


def metadata(**overrides: str) -> dict[str, str]:
    fields = {"format": UPDATE_FORMAT, "num_samples": "10", "task": "1", "round": "2", "base": "bafy"}
    fields.update(overrides)
    return fields


@settings(max_examples=50, deadline=None)
@given(num_samples=st.integers(min_value=1, max_value=2**32), task=st.integers(0, 2**64), round_=st.integers(0, 2**32))
def test_update_roundtrip(num_samples: int, task: int, round_: int) -> None:
    # Prepare
    original = delta(-0.25)

    # Execute
    data = encode_update(original, num_samples=num_samples, task=task, round=round_, base="bafyCID")
    update = decode_update(data, expected=SHAPES, max_bytes=LIMIT)

    # Assert
    assert update.num_samples == num_samples
    assert update.metadata == {
        "format": UPDATE_FORMAT,
        "num_samples": str(num_samples),
        "task": str(task),
        "round": str(round_),
        "base": "bafyCID",
    }
    for name in SHAPES:
        np.testing.assert_array_equal(update.tensors[name], original[name])


def test_encode_update_is_canonical() -> None:
    # Prepare
    forward = delta()
    backward = dict(reversed(list(forward.items())))

    # Execute / Assert
    assert encode_update(forward, num_samples=3, task=1, round=1, base="b") == encode_update(
        backward, num_samples=3, task=1, round=1, base="b"
    )


def test_num_samples_defaults_to_one_without_metadata() -> None:
    # Prepare
    data = write_safetensors(delta())

    # Execute
    update = decode_update(data, expected=SHAPES, max_bytes=LIMIT)

    # Assert
    assert update.num_samples == 1
    assert update.metadata == {}


@pytest.mark.parametrize("text", ["0", "-1", "+5", "01", " 5", "5 ", "1_000", "1e3", "\u0663", "abc", "", "9" * 30, str(2**32 + 1)])
def test_invalid_num_samples_is_rejected(text: str) -> None:
    # Prepare
    data = write_safetensors(delta(), metadata(num_samples=text))

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match="num_samples"):
        decode_update(data, expected=SHAPES, max_bytes=LIMIT)


@pytest.mark.parametrize(
    ("tensors", "reason"),
    [
        ({"fc.bias": np.zeros(3, np.float32)}, "missing \\['fc.weight'\\]"),
        ({**delta(), "extra": np.zeros(1, np.float32)}, "unknown \\['extra'\\]"),
        ({"fc.bias": np.zeros(3, np.float32), "fc.weight": np.zeros((2, 3), np.float32)}, "shape \\[2, 3\\], expected \\[3, 2\\]"),
        ({"fc.bias": np.zeros(3, np.float32), "fc.weight": np.zeros(6, np.float32)}, "shape \\[6\\]"),
        ({**delta(), "fc.bias": np.array([0, np.nan, 0], np.float32)}, "non-finite"),
        ({**delta(), "fc.bias": np.array([0, np.inf, 0], np.float32)}, "non-finite"),
        ({**delta(), "fc.bias": np.array([0, -np.inf, 0], np.float32)}, "non-finite"),
        ({**delta(), "fc.bias": np.array([0, 128, 0], np.float32)}, "\\|x\\| >= 128"),
    ],
)
def test_invalid_contents_are_rejected(tensors: dict[str, np.ndarray], reason: str) -> None:
    # Prepare
    data = write_safetensors(tensors, metadata())

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match=reason):
        decode_update(data, expected=SHAPES, max_bytes=LIMIT)


def test_other_format_is_rejected() -> None:
    # Prepare
    data = write_safetensors(delta(), metadata(format="fedledger-update/2"))

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match="unknown update format"):
        decode_update(data, expected=SHAPES, max_bytes=LIMIT)


def test_float64_update_from_the_safetensors_library_is_rejected() -> None:
    # Prepare
    data = safetensors.numpy.save({name: np.zeros(shape, np.float64) for name, shape in SHAPES.items()})

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match="only F32"):
        decode_update(data, expected=SHAPES, max_bytes=LIMIT)


def test_oversized_update_is_rejected() -> None:
    # Prepare
    data = encode_update(delta(), num_samples=1, task=1, round=1, base="b")

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match="over the limit"):
        decode_update(data, expected=SHAPES, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    ("tensors", "num_samples"),
    [(delta(), 0), (delta(), 2**32 + 1), ({**delta(), "fc.bias": np.full(3, np.nan, np.float32)}, 1),
     ({**delta(), "fc.bias": np.full(3, -200, np.float32)}, 1), ({**delta(), "fc.bias": np.zeros(3, np.float64)}, 1)],
)
def test_encode_update_refuses_what_verifiers_would_reject(tensors: dict[str, np.ndarray], num_samples: int) -> None:
    # Execute / Assert
    with pytest.raises(EncodeError):
        encode_update(tensors, num_samples=num_samples, task=1, round=1, base="b")


def test_model_roundtrip_and_canonical_reencoding() -> None:
    # Prepare: a model written by the safetensors library (not canonical).
    weights = {"b": np.arange(3, dtype=np.float32), "a": np.eye(2, dtype=np.float32) * 3}
    foreign = safetensors.numpy.save(weights)

    # Execute
    decoded, meta = decode_model(foreign, LIMIT)
    ours = encode_model(decoded, {"round": "1"})
    again, again_meta = decode_model(ours, LIMIT)

    # Assert
    assert meta == {}
    assert again_meta == {"round": "1"}
    assert ours == encode_model(weights, {"round": "1"})
    for name in weights:
        np.testing.assert_array_equal(again[name], weights[name])


@pytest.mark.parametrize(
    "data",
    [b"garbage!", write_safetensors({"w": np.array([np.nan], np.float32)}), write_safetensors({"w": np.array([1e6], np.float32)})],
)
def test_decode_model_rejects_invalid_models(data: bytes) -> None:
    # Execute / Assert
    with pytest.raises(InvalidModelError, match="invalid model|non-finite"):
        decode_model(data, LIMIT)


def test_encode_model_rejects_non_finite_weights() -> None:
    # Execute / Assert
    with pytest.raises(EncodeError, match="non-finite"):
        encode_model({"w": np.array([np.inf], np.float32)})
