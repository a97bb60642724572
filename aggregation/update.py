"""The update and model file formats of SPEC section 5.

An update is a canonical safetensors file of float32 tensors named by the
model's state-dict keys, holding the weight delta from the round's base model,
with metadata ``format=fedledger-update/1``, ``num_samples``, ``task``,
``round`` and ``base`` (the base model's CID). A global model is the same kind
of file holding full weights. Decoding validates everything a hostile sender
could get wrong before any value is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from aggregation.errors import EncodeError, InvalidModelError, InvalidUpdateError
from aggregation.fixedpoint import VALUE_BOUND, in_range
from aggregation.safetensors_io import read_safetensors_values, write_safetensors

UPDATE_FORMAT = "fedledger-update/1"

# A claim of more than 2**32 samples is hostile or broken; bounding it keeps the
# total weight of up to 1024 uncapped updates under fixedpoint.MAX_TOTAL_WEIGHT.
MAX_NUM_SAMPLES = 2**32

# Canonical positive decimal: ASCII digits, no sign, no leading zero, no
# whitespace or underscores (Python's int() would accept all of those, and
# "٣", so two parsers could disagree on the same bytes).
_POSITIVE_DECIMAL = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)


@dataclass(frozen=True)
class Update:
    """A decoded, validated update."""

    tensors: dict[str, np.ndarray]  # float32 delta per state-dict key, sorted by key
    num_samples: int  # from metadata; 1 when the sender gave none
    metadata: dict[str, str] = field(default_factory=dict)


def _check_values(tensors: Mapping[str, np.ndarray], error: type[Exception], values: np.ndarray | None = None) -> None:
    # `values`, when given, holds every tensor's values: one vectorized pass
    # instead of two numpy reductions per tensor (200k tiny tensors took
    # seconds). Only a file that fails is walked tensor by tensor, to name one.
    if values is not None and in_range(values):
        return
    for name, array in tensors.items():
        if not in_range(array):
            raise error(f"tensor {name!r} has non-finite values or values with |x| >= {VALUE_BOUND:g}")


def encode_update(delta: Mapping[str, np.ndarray], *, num_samples: int, task: int, round: int, base: str) -> bytes:
    """Write `delta` (float32 per state-dict key) as a canonical update file."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 0 < num_samples <= MAX_NUM_SAMPLES:
        raise EncodeError(f"num_samples must be an integer in [1, 2**32], got {num_samples!r}")
    # Fail at the sender rather than have every verifier reject the update.
    _check_values(delta, EncodeError)
    metadata = {
        "format": UPDATE_FORMAT,
        "num_samples": str(num_samples),
        "task": str(int(task)),
        "round": str(int(round)),
        "base": base,
    }
    return write_safetensors(delta, metadata)


def _parse_num_samples(metadata: Mapping[str, str]) -> int:
    text = metadata.get("num_samples")
    if text is None:
        return 1
    if not _POSITIVE_DECIMAL.fullmatch(text) or int(text) > MAX_NUM_SAMPLES:
        raise InvalidUpdateError(f"num_samples {text[:40]!r} is not a decimal integer in [1, 2**32]")
    return int(text)


def _names(names: list[str]) -> str:
    # Unknown names come from the sender: at most five, each cut short, so a
    # megabyte-long name still makes a one-line error.
    return "[" + ", ".join(repr(n) if len(n) <= 60 else repr(n[:57]) + "..." for n in names[:5]) + "]"


def decode_update(data: bytes, *, expected: Mapping[str, tuple[int, ...]], max_bytes: int) -> Update:
    """Decode and validate an untrusted update against the model's keys and shapes.

    Raises InvalidUpdateError unless `data` is valid safetensors of at most
    `max_bytes` whose tensors have exactly the `expected` names and shapes,
    all float32, finite and within the fixed-point range, and whose metadata
    (if it names a format) is ``fedledger-update/1`` with a valid num_samples.
    """
    tensors, metadata, values = read_safetensors_values(data, max_bytes)
    if tensors.keys() != expected.keys():
        missing = sorted(set(expected) - set(tensors))
        unknown = sorted(set(tensors) - set(expected))
        raise InvalidUpdateError(f"update keys do not match the model: missing {_names(missing)}, unknown {_names(unknown)}")
    for name, array in tensors.items():
        shape = expected[name]
        if array.shape != shape and array.shape != tuple(shape):
            raise InvalidUpdateError(f"tensor {name!r} has shape {list(array.shape)}, expected {list(shape)}")
    _check_values(tensors, InvalidUpdateError, values)
    if metadata.get("format", UPDATE_FORMAT) != UPDATE_FORMAT:
        raise InvalidUpdateError(f"unknown update format {metadata['format'][:40]!r}")
    return Update(tensors=tensors, num_samples=_parse_num_samples(metadata), metadata=metadata)


def encode_model(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Write full float32 model `weights` as a canonical safetensors file."""
    for name, array in weights.items():
        if not np.all(np.isfinite(np.asarray(array))):
            raise EncodeError(f"model tensor {name!r} has non-finite values")
    return write_safetensors(weights, metadata)


def decode_model(data: bytes, max_bytes: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode a global model file into (float32 weights, metadata).

    Raises InvalidModelError unless it is valid float32 safetensors whose values
    are finite and within the fixed-point range (it is the base of a round).
    """
    try:
        weights, metadata, values = read_safetensors_values(data, max_bytes)
    except InvalidUpdateError as exc:
        raise InvalidModelError(f"invalid model: {exc}") from exc
    _check_values(weights, InvalidModelError, values)
    return weights, metadata
