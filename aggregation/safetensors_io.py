"""A canonical safetensors writer and a strict reader for untrusted bytes.

The format (https://github.com/huggingface/safetensors): an 8-byte
little-endian u64 header length N, N bytes of JSON header, then the data
buffer. The header maps each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
buffer) plus an optional ``"__metadata__": {str: str}``.

Both directions are hand-written rather than delegated to the `safetensors`
library because the two jobs need guarantees the library does not promise:

* the writer must be *canonical* -- the same tensors and metadata always give
  the same bytes, hence the same CID on every node and every library version;
* the reader faces hostile input from other participants: it must never
  unpickle, never allocate more than the input's size, and reject every
  ambiguity (duplicate keys, gaps, overlaps, trailing bytes) so that two
  honest nodes can never read different tensors out of the same bytes.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, Mapping

import numpy as np

from aggregation.errors import EncodeError, InvalidUpdateError

# Only float32 is accepted: updates and models are float32 by SPEC section 5,
# and one dtype keeps the fixed-point conversion exact (see fixedpoint.py).
DTYPE = "F32"
_LE_F32 = np.dtype("<f4")
_ITEMSIZE = 4

# A sane bound on the JSON header. Real headers are ~100 bytes per tensor, so
# this allows ~100k tensors while keeping json.loads' work bounded.
MAX_HEADER_BYTES = 16 * 2**20

# Ranks above this are never produced by a state dict; bounding it keeps a
# hostile shape list from making the shape product arbitrarily expensive.
MAX_RANK = 16

METADATA_KEY = "__metadata__"
_HEADER_ALIGN = 8


def write_safetensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize float32 `tensors` (and optional string `metadata`) canonically.

    Tensors are laid out in sorted name order with contiguous offsets; the
    header is JSON with sorted keys and no whitespace, padded with spaces to a
    multiple of 8 (the alignment the reference writer uses, so memory-mapped
    readers can view the data in place); data is little-endian float32.
    An empty or absent `metadata` writes no ``__metadata__`` entry.
    """
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise EncodeError(f"metadata must map str to str, got {key!r}: {value!r}")
        header[METADATA_KEY] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == METADATA_KEY:
            raise EncodeError(f"invalid tensor name {name!r}")
        array = np.asarray(tensors[name])
        if array.dtype != np.float32:
            # No silent casts: a float64 or int tensor reaching the writer is
            # a bug upstream, and casting would hide a precision change.
            raise EncodeError(f"tensor {name!r} has dtype {array.dtype}, expected float32")
        data = np.ascontiguousarray(array, dtype=_LE_F32).tobytes()
        header[name] = {
            "data_offsets": [offset, offset + len(data)],
            "dtype": DTYPE,
            "shape": [int(d) for d in array.shape],
        }
        chunks.append(data)
        offset += len(data)
    # ensure_ascii (the default) makes the header bytes independent of how a
    # name's non-ASCII characters would otherwise be encoded.
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    raw = text.encode("ascii")
    raw += b" " * (-len(raw) % _HEADER_ALIGN)
    return b"".join([struct.pack("<Q", len(raw)), raw, *chunks])


def _reject(message: str) -> InvalidUpdateError:
    return InvalidUpdateError(f"invalid safetensors: {message}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON parsers disagree on which duplicate wins; a file that two readers
    # could decode differently must be rejected, not interpreted.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _reject(f"duplicate key {key!r} in header")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _reject(f"non-standard JSON constant {name} in header")


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python; JSON `true` is not a dimension.
    return isinstance(value, int) and not isinstance(value, bool)


# A JSON string, or one bracket outside strings.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# A valid header nests at most object -> entry -> shape list (or object -> metadata).
MAX_HEADER_DEPTH = 3


def _check_depth(text: str) -> None:
    """Refuse deep nesting before json sees it: its C parser recurses, and a
    hostile header of 100k brackets can overflow the C stack (a segfault, not a
    RecursionError) when the interpreter's recursion limit has been raised."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        c = token.group()
        if c in "[{":
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                raise _reject(f"header is not valid JSON (nested deeper than {MAX_HEADER_DEPTH})")
        elif c in "]}":
            depth -= 1


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    _check_depth(text)
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InvalidUpdateError:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and over-long integer literals;
        # RecursionError a deeply nested header.
        raise _reject(f"header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _reject(f"header is a JSON {type(header).__name__}, expected an object")
    return header


def _parse_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _reject("__metadata__ must be an object of strings")
    return dict(value)


def _parse_entry(name: str, entry: Any, max_bytes: int) -> tuple[tuple[int, ...], int, int]:
    if not name:
        raise _reject("empty tensor name")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _reject(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
    if entry["dtype"] != DTYPE:
        raise _reject(f"tensor {name!r} has dtype {entry['dtype']!r}, only {DTYPE} is accepted")
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_int(d) and d >= 0 for d in shape):
        raise _reject(f"tensor {name!r} shape must be a list of at most {MAX_RANK} non-negative integers")
    # Bound the product of the non-zero dimensions too: a zero-size tensor of
    # shape [0, 2**70] fits in no bytes but would still break numpy.
    nonzero = math.prod(d for d in shape if d)
    if nonzero * _ITEMSIZE > max_bytes:
        raise _reject(f"tensor {name!r} shape {shape} is larger than the size limit")
    offsets = entry["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise _reject(f"tensor {name!r} data_offsets must be a list of two integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _reject(f"tensor {name!r} has invalid data_offsets {offsets}")
    if end - begin != math.prod(shape) * _ITEMSIZE:
        raise _reject(f"tensor {name!r} data_offsets {offsets} disagree with shape {shape} x {_ITEMSIZE} bytes")
    return tuple(shape), begin, end


def read_safetensors(data: bytes, max_bytes: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse untrusted safetensors `data` into float32 tensors and metadata.

    Raises InvalidUpdateError, with a message saying what is wrong, unless the
    file is exactly a valid float32 safetensors file of at most `max_bytes`:
    every byte after the header belongs to exactly one tensor.
    Never unpickles and never allocates more than ``len(data)``.
    """
    if len(data) > max_bytes:
        raise _reject(f"file is {len(data)} bytes, over the limit of {max_bytes}")
    if len(data) < 8:
        raise _reject(f"file is {len(data)} bytes, too short for the 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len > MAX_HEADER_BYTES:
        raise _reject(f"header length {header_len} is over the bound of {MAX_HEADER_BYTES}")
    if header_len > len(data) - 8:
        raise _reject(f"header length {header_len} is larger than the file ({len(data)} bytes)")
    header = _parse_header(bytes(data[8 : 8 + header_len]))
    buffer = memoryview(data)[8 + header_len :]

    metadata = _parse_metadata(header.pop(METADATA_KEY)) if METADATA_KEY in header else {}
    entries: list[tuple[int, int, str, tuple[int, ...]]] = []
    for name, entry in header.items():
        shape, begin, end = _parse_entry(name, entry, max_bytes)
        entries.append((begin, end, name, shape))
    entries.sort()
    # Walking the tensors in offset order, each must start where the previous
    # one ended and the last must end at the end of the file: no gap could
    # hide data, no overlap could alias two tensors, no trailing bytes.
    position = 0
    for begin, end, name, _ in entries:
        if begin < position:
            raise _reject(f"tensor {name!r} overlaps the previous tensor at offset {begin}")
        if begin > position:
            raise _reject(f"gap of {begin - position} bytes before tensor {name!r}")
        position = end
    if position > len(buffer):
        raise _reject(f"data_offsets end at {position}, past the {len(buffer)}-byte data buffer")
    if position < len(buffer):
        raise _reject(f"{len(buffer) - position} trailing bytes after the last tensor")

    tensors: dict[str, np.ndarray] = {}
    for begin, end, name, shape in entries:
        if begin == end:
            tensors[name] = np.zeros(shape, dtype=np.float32)
            continue
        view = np.frombuffer(buffer, dtype=_LE_F32, count=(end - begin) // _ITEMSIZE, offset=begin)
        # astype copies into native float32: independent of `data`, writable.
        tensors[name] = view.reshape(shape).astype(np.float32)
    return dict(sorted(tensors.items())), metadata
