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

import contextlib
import gc
import json
import re
import struct
from typing import Any, Iterator, Mapping

import numpy as np

from aggregation.errors import EncodeError, InvalidUpdateError
from aggregation.dtypes import FILE_DTYPES, ITEMSIZE, MODEL_DTYPES

# By default only float32 is read or written; a caller that knows the model
# asks for more (`accept`): update.py lets a model hold the dtypes of
# aggregation.dtypes and an update their deltas (F32 and I64).
DTYPE = "F32"
F32_ONLY = frozenset({DTYPE})
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


def write_safetensors(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None, *, accept: frozenset[str] = F32_ONLY
) -> bytes:
    """Serialize `tensors` (float32, or the dtype codes in `accept`) and optional string `metadata` canonically.

    Tensors are laid out in sorted name order with contiguous offsets; the
    header is JSON with sorted keys and no whitespace, padded with spaces to a
    multiple of 8 (the alignment the reference writer uses, so memory-mapped
    readers can view the data in place); data is little-endian.
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
        native = array.dtype.newbyteorder("=")
        code = DTYPE if native == np.float32 else _code(native, accept)
        if code is None:
            # No silent casts: a float64 or int tensor reaching the writer is
            # a bug upstream, and casting would hide a precision change.
            expected = "float32" if accept == F32_ONLY else "one of " + ", ".join(sorted(accept))
            raise EncodeError(f"tensor {name!r} has dtype {array.dtype}, expected {expected}")
        data = np.ascontiguousarray(array, dtype=FILE_DTYPES[code]).tobytes()
        header[name] = {
            "data_offsets": [offset, offset + len(data)],
            "dtype": code,
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


def _code(dtype: np.dtype, accept: frozenset[str]) -> str | None:
    for code in accept:
        if MODEL_DTYPES.get(code) == dtype:
            return code
    return None


def _reject(message: str) -> InvalidUpdateError:
    return InvalidUpdateError(f"invalid safetensors: {message}")


def _short(value: Any) -> str:
    """`value`'s repr, cut so that a hostile megabyte-long name or dtype still makes a one-line error."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON parsers disagree on which duplicate wins; a file that two readers
    # could decode differently must be rejected, not interpreted. dict() runs
    # in C: a Python loop here was a quarter of a 200k-tensor header's cost.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _reject(f"duplicate key {_short(key)} in header")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise _reject(f"non-standard JSON constant {name} in header")


# A valid header nests at most object -> entry -> shape list (or object -> metadata).
MAX_HEADER_DEPTH = 3
# Offsets and dimensions are u64 (20 digits). Longer numbers are refused
# before int() sees them (quadratic in the digits once the interpreter's digit
# limit is lifted); up to 64 leaves oversized dimensions to the size check and
# keeps a product of MAX_RANK of them a small integer.
MAX_DIGITS = 64


def _nesting_pattern(depth: int) -> re.Pattern[bytes]:
    """Bytes of JSON tokens with brackets nested at most `depth` deep, as a regex.

    Tokens: a complete string; a run of at most MAX_DIGITS digits; any other
    run of bytes that are not quotes, digits or brackets; or a bracketed group
    one level deeper. Each alternative starts
    with a different byte and every quantifier is possessive, so the regex
    never backtracks: matching reads each byte once, in linear time, and stops
    at the first token that is not allowed.
    """
    string = rb'"(?:[^"\\]++|\\.)*+"'
    flat = string + rb"|[0-9]{1,%d}+(?![0-9])|[^\"\[\]{}0-9]++" % MAX_DIGITS
    level = rb"(?:" + flat + rb")*+"
    for _ in range(depth):
        level = rb"(?:" + flat + rb"|[\[{]" + level + rb"[\]}])*+"
    return re.compile(level, re.DOTALL)


# The bracket tokenizer this replaces could fail at a quote and be retried at
# the next one, rescanning the rest of the header each time: quadratic on an
# unterminated '"\"\"\"...', where 32 KB took half a minute and every verifier
# of the update stalled (#14 H1).
_WELL_NESTED = _nesting_pattern(MAX_HEADER_DEPTH)


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    # Before json sees the text: its C parser recurses, and 100k brackets can
    # overflow the C stack (a segfault, not a RecursionError) when the
    # interpreter's recursion limit has been raised; and int() is quadratic in
    # the digit count once the interpreter's digit limit is lifted.
    if _WELL_NESTED.fullmatch(raw) is None:
        raise _reject(
            "header is not valid JSON (an unterminated string, unbalanced brackets, "
            f"nesting deeper than {MAX_HEADER_DEPTH} or a number of more than {MAX_DIGITS} digits)"
        )
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InvalidUpdateError:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and over-long integer literals.
        raise _reject(f"header is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _reject(f"header is a JSON {type(header).__name__}, expected an object")
    return header


def _parse_metadata(value: Any) -> dict[str, str]:
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise _reject("__metadata__ must be an object of strings")
    return value


_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


def _parse_entry(name: str, entry: Any, max_bytes: int, accept: frozenset[str]) -> tuple[int, int, str, tuple[int, ...], str]:
    # Exact type checks: bool is a subclass of int, and JSON `true` is not a
    # dimension. Numbers have at most MAX_DIGITS digits (_WELL_NESTED), so the
    # products below stay small whatever the shape.
    if not name:
        raise _reject("empty tensor name")
    if type(entry) is not dict or len(entry) != 3 or not _ENTRY_KEYS.issubset(entry):
        raise _reject(f"tensor {_short(name)} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype == DTYPE:
        itemsize = _ITEMSIZE
    elif type(dtype) is str and dtype in accept:
        itemsize = ITEMSIZE[dtype]
    else:
        raise _reject(f"tensor {_short(name)} has dtype {_short(dtype)}, only {', '.join(sorted(accept))} is accepted")
    if type(shape) is not list or len(shape) > MAX_RANK:
        raise _reject(f"tensor {_short(name)} shape must be a list of at most {MAX_RANK} non-negative integers")
    # Bound the product of the non-zero dimensions too: a zero-size tensor of
    # shape [0, 2**64-1] fits in no bytes but would still break numpy.
    nonzero = 1
    empty = False
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise _reject(f"tensor {_short(name)} shape must be a list of at most {MAX_RANK} non-negative integers")
        if dim:
            nonzero *= dim
        else:
            empty = True
    if nonzero * itemsize > max_bytes:
        raise _reject(f"tensor {_short(name)} shape {shape} is larger than the size limit")
    if type(offsets) is not list or len(offsets) != 2 or type(offsets[0]) is not int or type(offsets[1]) is not int:
        raise _reject(f"tensor {_short(name)} data_offsets must be a list of two integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _reject(f"tensor {_short(name)} has invalid data_offsets {offsets}")
    # The byte span must be exactly what the shape needs, before anything is
    # allocated: a header cannot make the reader allocate more than the file.
    if end - begin != (0 if empty else nonzero * itemsize):
        raise _reject(f"tensor {_short(name)} data_offsets {offsets} disagree with shape {shape} x {itemsize} bytes")
    return begin, end, name, tuple(shape), dtype


def read_safetensors(
    data: bytes, max_bytes: int, *, accept: frozenset[str] = F32_ONLY
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse untrusted safetensors `data` into tensors (float32, or the dtype codes in `accept`) and metadata.

    Raises InvalidUpdateError, with a message saying what is wrong, unless the
    file is exactly a valid float32 safetensors file of at most `max_bytes`:
    every byte after the header belongs to exactly one tensor.
    Never unpickles, never allocates more than ``len(data)`` for tensor values,
    and runs in time linear in ``len(data)`` (plus sorting the tensor names).
    """
    tensors, metadata, _ = read_safetensors_values(data, max_bytes, accept=accept)
    return tensors, metadata


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a header becomes objects.

    A 200k-tensor header makes about a million dicts, lists and tuples, none
    of them in a cycle; every few hundred of them the collector would walk the
    young objects, and now and then the whole growing heap: measured, half of
    the parse time. Nothing parsed here can leak, so pausing it is safe.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def read_safetensors_values(
    data: bytes, max_bytes: int, *, accept: frozenset[str] = F32_ONLY
) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray | None]:
    """As `read_safetensors`, plus the flat float32 array all the tensors are views of.

    A caller can check every value in one vectorized pass over that array
    rather than one numpy call per tensor. A file with any tensor that is not
    F32 has no such array: None, and each tensor is a copy of its own.
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
    buffer = memoryview(data)[8 + header_len :]
    metadata: dict[str, str] = {}
    layout: list[tuple[int, int, str, tuple[int, ...], str]] = []
    with _cyclic_gc_paused():
        header = _parse_header(bytes(data[8 : 8 + header_len]))
        for name, entry in header.items():
            if name == METADATA_KEY:
                metadata = _parse_metadata(entry)
            else:
                layout.append(_parse_entry(name, entry, max_bytes, accept))
        del header
    # Walking the tensors in offset order, each must start where the previous
    # one ended and the last must end at the end of the file: no gap could
    # hide data, no overlap could alias two tensors, no trailing bytes. A
    # canonical file is already in this order, which sort() sees in one pass.
    layout.sort()
    position = 0
    for begin, end, name, _, _ in layout:
        if begin < position:
            raise _reject(f"tensor {_short(name)} overlaps the previous tensor at offset {begin}")
        if begin > position:
            raise _reject(f"gap of {begin - position} bytes before tensor {_short(name)}")
        position = end
    if position > len(buffer):
        raise _reject(f"data_offsets end at {position}, past the {len(buffer)}-byte data buffer")
    if position < len(buffer):
        raise _reject(f"{len(buffer) - position} trailing bytes after the last tensor")

    if accept != F32_ONLY and any(entry[4] != DTYPE for entry in layout):
        return _read_mixed(buffer, layout), metadata, None
    # One copy of the whole data buffer into native float32 (independent of
    # `data`, writable); every tensor is a view of its own disjoint span.
    values = np.frombuffer(buffer, dtype=_LE_F32).astype(np.float32)
    tensors = {}
    for begin, end, name, shape, _ in layout:
        view = values[begin // _ITEMSIZE : end // _ITEMSIZE]
        tensors[name] = view if len(shape) == 1 else view.reshape(shape)
    return dict(sorted(tensors.items())), metadata, values


def _read_mixed(buffer: memoryview, layout: list[tuple[int, int, str, tuple[int, ...], str]]) -> dict[str, np.ndarray]:
    # A tensor's span may start at any byte (a hostile file need not align
    # them): each is copied out on its own, aligned, writable, native order.
    tensors = {}
    for begin, end, name, shape, code in layout:
        itemsize = ITEMSIZE[code]
        array = np.frombuffer(buffer, dtype=FILE_DTYPES[code], count=(end - begin) // itemsize, offset=begin)
        if code == "BOOL" and array.size and int(array.view(np.uint8).max()) > 1:
            # numpy would keep a byte 2 as a "True" unequal to True: two readers could disagree.
            raise _reject(f"tensor {_short(name)} is BOOL with a byte other than 0 or 1")
        tensors[name] = array.astype(MODEL_DTYPES[code]).reshape(shape)
    return dict(sorted(tensors.items()))
