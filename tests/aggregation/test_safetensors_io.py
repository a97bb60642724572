"""The canonical safetensors writer and the strict reader for hostile bytes."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aggregation.errors import EncodeError, InvalidUpdateError
from aggregation.safetensors_io import _WELL_NESTED, MAX_DIGITS, MAX_HEADER_BYTES, MAX_HEADER_DEPTH, read_safetensors, write_safetensors

LIMIT = 2**20

names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).filter(
    lambda n: n != "__metadata__"
)
float32_arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)
tensor_dicts = st.dictionaries(names, float32_arrays, max_size=5)
metadata_dicts = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)


def raw_file(header: dict | list | bytes, buffer: bytes = b"", header_len: int | None = None) -> bytes:
    """A safetensors file from a header (object or raw bytes) and buffer, with an optional lying length."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if header_len is None else header_len
    return struct.pack("<Q", length) + raw + buffer


def entry(shape: list, begin: int, end: int, dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


# -- writer ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(tensors=tensor_dicts, metadata=metadata_dicts)
def test_writer_is_canonical_and_readable(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    # Prepare: the same content inserted in reverse order.
    reversed_tensors = dict(reversed(list(tensors.items())))
    reversed_metadata = dict(reversed(list(metadata.items())))

    # Execute
    first = write_safetensors(tensors, metadata)
    second = write_safetensors(reversed_tensors, reversed_metadata)
    read, read_metadata = read_safetensors(first, LIMIT)

    # Assert: same bytes, aligned header, and an exact round trip.
    assert first == second
    (header_len,) = struct.unpack_from("<Q", first)
    assert header_len % 8 == 0
    assert read_metadata == metadata
    assert list(read) == sorted(tensors)
    for name, array in tensors.items():
        assert read[name].dtype == np.float32
        assert read[name].shape == array.shape
        assert read[name].tobytes() == array.tobytes()


@settings(max_examples=30, deadline=None)
@given(tensors=tensor_dicts.filter(bool))
def test_safetensors_library_reads_our_files(tensors: dict[str, np.ndarray]) -> None:
    # Execute
    loaded = safetensors.numpy.load(write_safetensors(tensors))

    # Assert
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)


def test_safetensors_library_reads_our_metadata(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "m.safetensors"
    path.write_bytes(write_safetensors({"w": np.ones((2, 3), np.float32)}, {"format": "fedledger-update/1"}))

    # Execute
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        weight = f.get_tensor("w")

    # Assert
    assert metadata == {"format": "fedledger-update/1"}
    np.testing.assert_array_equal(weight, np.ones((2, 3), np.float32))


def test_writer_layout_is_sorted_contiguous_and_compact() -> None:
    # Prepare
    tensors = {"b": np.ones(2, np.float32), "a": np.zeros((1, 1), np.float32)}

    # Execute
    data = write_safetensors(tensors, {"k": "v"})

    # Assert: exact header text, spaces as padding, data in name order.
    (header_len,) = struct.unpack_from("<Q", data)
    header = data[8 : 8 + header_len]
    expected = (
        b'{"__metadata__":{"k":"v"},"a":{"data_offsets":[0,4],"dtype":"F32","shape":[1,1]},'
        b'"b":{"data_offsets":[4,12],"dtype":"F32","shape":[2]}}'
    )
    assert header.rstrip(b" ") == expected
    assert data[8 + header_len :] == np.array([0, 1, 1], "<f4").tobytes()


def test_our_reader_reads_safetensors_library_files() -> None:
    # Prepare
    weights = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.array([-1.5], np.float32)}
    data = safetensors.numpy.save(weights, metadata={"a": "b"})

    # Execute
    tensors, metadata = read_safetensors(data, LIMIT)

    # Assert
    assert metadata == {"a": "b"}
    np.testing.assert_array_equal(tensors["x"], weights["x"])
    np.testing.assert_array_equal(tensors["y"], weights["y"])


@pytest.mark.parametrize(
    ("tensors", "metadata"),
    [
        ({"w": np.ones(2, np.float64)}, None),
        ({"w": np.ones(2, np.int32)}, None),
        ({"": np.ones(2, np.float32)}, None),
        ({"__metadata__": np.ones(2, np.float32)}, None),
        ({"w": np.ones(2, np.float32)}, {"k": 1}),
    ],
)
def test_writer_rejects_what_it_cannot_write_canonically(tensors: dict, metadata: dict | None) -> None:
    # Execute / Assert
    with pytest.raises(EncodeError):
        write_safetensors(tensors, metadata)


# -- reader: hostile inputs --------------------------------------------------

FOUR = np.arange(4, dtype="<f4").tobytes()  # 16 bytes

MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "too short"),
    "seven bytes": (b"\x01" * 7, "too short"),
    "header longer than file": (raw_file({"w": entry([4], 0, 16)}, FOUR, header_len=10_000), "larger than the file"),
    "header length near 2**64": (raw_file(b"{}", b"", header_len=2**64 - 1), "over the bound"),
    "not utf-8": (raw_file(b'{"\xff\xfe":1}'), "not UTF-8"),
    "not json": (raw_file(b"{not json"), "not valid JSON"),
    "json nan": (raw_file(b'{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,0]}}'), "non-standard JSON"),
    "deep nesting": (raw_file(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
    "huge integer": (raw_file(b'{"w":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,0]}}'), "not valid JSON"),
    "top-level list": (raw_file([1, 2]), "expected an object"),
    "duplicate key": (
        raw_file(b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', FOUR),
        "duplicate key",
    ),
    "duplicate key inside an entry": (
        raw_file(b'{"w":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}}', FOUR),
        "duplicate key 'dtype'",
    ),
    "duplicate metadata key": (
        raw_file(b'{"__metadata__":{"k":"a","k":"b"},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', FOUR),
        "duplicate key 'k'",
    ),
    "duplicate key spelled with an escape": (
        raw_file(b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"\\u0077":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', FOUR),
        "duplicate key 'w'",
    ),
    "unterminated string": (raw_file(b'{"w":{"dtype":"F32}}'), "not valid JSON"),
    "unbalanced close": (raw_file(b'{"w":1}}'), "not valid JSON"),
    "65-digit number": (raw_file(b'{"w":{"dtype":"F32","shape":[' + b"1" * 65 + b'],"data_offsets":[0,0]}}'), "not valid JSON"),
    "dtype F64": (raw_file({"w": entry([2], 0, 16, "F64")}, FOUR), "only F32"),
    "dtype I64": (raw_file({"w": entry([2], 0, 16, "I64")}, FOUR), "only F32"),
    "dtype F16": (raw_file({"w": entry([8], 0, 16, "F16")}, FOUR), "only F32"),
    "dtype missing": (raw_file({"w": {"shape": [4], "data_offsets": [0, 16]}}, FOUR), "exactly dtype"),
    "extra entry field": (raw_file({"w": {**entry([4], 0, 16), "x": 1}}, FOUR), "exactly dtype"),
    "entry not an object": (raw_file({"w": [1, 2]}, FOUR), "exactly dtype"),
    "shape not a list": (raw_file({"w": entry(4, 0, 16)}, FOUR), "shape must be"),  # type: ignore[arg-type]
    "negative dim": (raw_file({"w": entry([-4], 0, 16)}, FOUR), "shape must be"),
    "float dim": (raw_file({"w": entry([4.0], 0, 16)}, FOUR), "shape must be"),
    "bool dim": (raw_file({"w": entry([True, 4], 0, 16)}, FOUR), "shape must be"),
    "rank 17": (raw_file({"w": entry([1] * 17, 0, 4)}, FOUR[:4]), "shape must be"),
    "zero-size huge dims": (raw_file({"w": entry([0, 2**70], 0, 0)}), "larger than the size limit"),
    "offsets not a pair": (raw_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, FOUR), "two integers"),
    "offsets reversed": (raw_file({"w": entry([0], 16, 0)}, FOUR), "invalid data_offsets"),
    "offsets negative": (raw_file({"w": entry([4], -16, 0)}, FOUR), "invalid data_offsets"),
    "offsets disagree with shape": (raw_file({"w": entry([3], 0, 16)}, FOUR), "disagree with shape"),
    "overlap": (raw_file({"a": entry([4], 0, 16), "b": entry([2], 8, 16)}, FOUR), "overlaps"),
    "gap": (raw_file({"a": entry([1], 0, 4), "b": entry([2], 8, 16)}, FOUR), "gap of 4 bytes"),
    "gap at start": (raw_file({"a": entry([3], 4, 16)}, FOUR), "gap of 4 bytes"),
    "out of bounds": (raw_file({"w": entry([8], 0, 32)}, FOUR), "past the 16-byte data buffer"),
    "trailing bytes": (raw_file({"w": entry([2], 0, 8)}, FOUR), "8 trailing bytes"),
    "metadata not strings": (raw_file({"__metadata__": {"n": 5}, "w": entry([4], 0, 16)}, FOUR), "__metadata__"),
    "metadata not an object": (raw_file({"__metadata__": "x", "w": entry([4], 0, 16)}, FOUR), "__metadata__"),
    "empty name": (raw_file({"": entry([4], 0, 16)}, FOUR), "empty tensor name"),
    "pickle of a dict": (pickle.dumps({"w": [1.0, 2.0, 3.0]}), "header length"),
    "pickle protocol 0": (pickle.dumps({"w": [1.0]}, protocol=0), "header length"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_reader_rejects_malformed_files(case: str) -> None:
    # Prepare
    data, reason = MALFORMED[case]

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match=reason):
        read_safetensors(data, LIMIT)


def test_reader_rejects_header_that_lies_about_tensor_sizes() -> None:
    # Prepare: a header claiming a 1M-element tensor over a 16-byte buffer, with
    # offsets consistent with the claim: a reader trusting it would read past the end.
    data = raw_file({"w": entry([2**20], 0, 2**22)}, FOUR)

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match="past the 16-byte data buffer"):
        read_safetensors(data, 2**23)


def test_reader_rejects_files_over_max_bytes() -> None:
    # Prepare
    data = write_safetensors({"w": np.zeros(100, np.float32)})

    # Execute / Assert
    read_safetensors(data, len(data))
    with pytest.raises(InvalidUpdateError, match="over the limit"):
        read_safetensors(data, len(data) - 1)


def test_reader_bounds_header_length_even_when_the_file_is_big() -> None:
    # Prepare: a file large enough that "larger than the file" does not apply.
    data = struct.pack("<Q", MAX_HEADER_BYTES + 1) + b" " * (MAX_HEADER_BYTES + 8)

    # Execute / Assert
    with pytest.raises(InvalidUpdateError, match="over the bound"):
        read_safetensors(data, len(data))


def test_reader_never_unpickles(tmp_path: Path) -> None:
    # Prepare: a pickle whose loading would create a file.
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    data = pickle.dumps({"w": Exploit()})

    # Execute
    with pytest.raises(InvalidUpdateError):
        read_safetensors(data, LIMIT)

    # Assert
    assert not marker.exists()


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=10_000),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_reader_only_ever_raises_invalid_update_error(position: int, value: int, cut: int) -> None:
    # Prepare: one corrupted byte and a truncation of a valid file.
    valid = write_safetensors({"a": np.ones((2, 3), np.float32), "b": np.zeros(5, np.float32)}, {"k": "v"})
    corrupted = bytearray(valid)
    corrupted[position % len(valid)] = value
    data = bytes(corrupted[: len(valid) - cut % 9])

    # Execute
    try:
        tensors, _ = read_safetensors(data, LIMIT)
    except InvalidUpdateError:
        return

    # Assert: whatever is accepted is well-formed float32 covering the buffer exactly.
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert len(data) == len(valid)


# -- reader: time and memory stay linear in the input (#14 H1) ----------------
#
# Timings are CPU time of this process (other processes on a loaded machine
# barely move it); the tests compare the reader with itself (the same hostile
# family at two sizes, the best of three runs each) and keep absolute bounds
# orders of magnitude above what a linear reader needs.

KIB = 2**10
MIB = 2**20


def escaped_quotes(size: int) -> bytes:
    # An unterminated string of escaped quotes: every quote in it looks like the
    # start of another string to a tokenizer that retries at each position.
    return b'"' + b'\\"' * (size // 2)


HOSTILE_HEADERS = {
    "unterminated escaped quotes": escaped_quotes,
    "escaped quotes inside an entry": lambda size: b'{"w":{"dtype":"' + b'\\"' * (size // 2),
    "quote and backslash runs": lambda size: b'{"' + b'\\\\\\"' * (size // 4),
    "open brackets": lambda size: b"[" * size,
    "nested objects": lambda size: b'{"a":' * (size // 5),
    "brackets side by side": lambda size: b'{"w":[' + b"[]," * (size // 3) + b"[]]}",
    "long number": lambda size: b'{"w":{"dtype":"F32","shape":[' + b"7" * size + b'],"data_offsets":[0,0]}}',
    "many keys": lambda size: b"{" + b",".join(b'"%x":0' % i for i in range(size // 8)) + b"}",
}


def best_time(function, *args, repeat: int = 3) -> float:
    """The fastest of `repeat` runs of `function(*args)`, which must raise InvalidUpdateError."""
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        with pytest.raises(InvalidUpdateError):
            function(*args)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.timeout(60)
def test_escaped_quote_header_cannot_stall_every_verifier() -> None:
    # Prepare: a 1 MiB header of '"\"\"\"...' (the limit allows 16 MiB). The old
    # bracket tokenizer rescanned the rest of the header from every quote.
    data = raw_file(escaped_quotes(MIB))

    # Execute
    start = time.process_time()
    with pytest.raises(InvalidUpdateError, match="not valid JSON"):
        read_safetensors(data, 2 * MIB)
    elapsed = time.process_time() - start

    # Assert: linear work is milliseconds; the quadratic tokenizer needed hours.
    assert elapsed < 2.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("family", sorted(HOSTILE_HEADERS))
def test_reader_time_grows_linearly_with_hostile_header_size(family: str) -> None:
    # Prepare: the same hostile pattern at 128 KiB and at 1 MiB (8x).
    small = raw_file(HOSTILE_HEADERS[family](128 * KIB))
    large = raw_file(HOSTILE_HEADERS[family](MIB))

    # Execute
    t_small = best_time(read_safetensors, small, 4 * MIB)
    t_large = best_time(read_safetensors, large, 4 * MIB)

    # Assert: 8x the input may cost 8x the time, with 4x slack for noise (and 50 ms
    # for the CPU clock's resolution); a quadratic parser costs 64x.
    assert t_large <= 32 * t_small + 0.05, f"{t_small=:.4f} {t_large=:.4f}"
    assert t_large < 2.0



def well_nested_reference(raw: bytes) -> bool:
    """A byte-at-a-time statement of what _WELL_NESTED accepts: strings closed, brackets balanced and
    at most MAX_HEADER_DEPTH deep outside strings, no run of more than MAX_DIGITS digits outside strings."""
    depth = digits = i = 0
    while i < len(raw):
        byte = raw[i : i + 1]
        digits = digits + 1 if byte.isdigit() else 0
        if byte == b'"':
            i += 1
            while i < len(raw) and raw[i : i + 1] != b'"':
                i += 2 if raw[i : i + 1] == b"\\" else 1
            if i >= len(raw):
                return False
        elif byte in (b"[", b"{"):
            depth += 1
        elif byte in (b"]", b"}"):
            depth -= 1
        if depth > MAX_HEADER_DEPTH or depth < 0 or digits > MAX_DIGITS:
            return False
        i += 1
    return depth == 0


json_ish = st.lists(
    st.sampled_from([b'"', b"\\", b"[", b"]", b"{", b"}", b"7", b"7" * 33, b"a", b":", b",", b" ", "\u00e9".encode()]), max_size=40
).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(raw=json_ish)
def test_nesting_scan_agrees_with_a_byte_at_a_time_scanner(raw: bytes) -> None:
    # Execute / Assert
    assert (_WELL_NESTED.fullmatch(raw) is not None) == well_nested_reference(raw)


@settings(max_examples=200, deadline=None)
@given(tensors=tensor_dicts, metadata=metadata_dicts)
def test_nesting_scan_accepts_every_header_the_writer_makes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    # Prepare
    data = write_safetensors(tensors, metadata)

    # Execute / Assert
    assert _WELL_NESTED.fullmatch(data[8 : 8 + struct.unpack_from("<Q", data)[0]]) is not None


def peak_allocation(data: bytes, max_bytes: int) -> int:
    """The most memory read_safetensors(data, max_bytes) holds at once, numpy buffers included."""
    tracemalloc.start()
    try:
        with contextlib.suppress(InvalidUpdateError):
            read_safetensors(data, max_bytes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# (file, allowed peak as a multiple of the file's size). Shapes are checked
# against the byte span before anything is allocated, so a header claiming a
# gigabyte costs nothing; a header's JSON becomes Python objects, a constant
# factor (about 22x for the worst case, tiny keys) that MAX_HEADER_BYTES caps.
ALLOCATION_CASES = {
    "1-D shape claims 1 GiB": (raw_file({"w": entry([2**28], 0, 2**30)}, FOUR), 2),
    "2-D shape claims 1 GiB": (raw_file({"w": entry([2**14, 2**14], 0, 2**30)}, FOUR), 2),
    "zero-size tensor of huge dimensions": (raw_file({"w": entry([0, 2**40, 2**40], 0, 0)}), 2),
    # 2000 empty tensors of shape [0, 2**18]: views of nothing, no data allocated.
    "many zero-size tensors of large shapes": (raw_file({f"t{i}": entry([0, 2**18], 0, 0) for i in range(2000)}), 16),
    "valid 1 MiB update": (write_safetensors({"w": np.ones(2**18, np.float32)}), 2),
    "many tiny keys": (raw_file(b"{" + b",".join(b'"%x":0' % i for i in range(2**17)) + b"}"), 32),
    "many metadata keys": (raw_file(b'{"__metadata__":{' + b",".join(b'"%x":""' % i for i in range(2**17)) + b"}}"), 32),
}


@pytest.mark.parametrize("case", sorted(ALLOCATION_CASES))
def test_hostile_header_cannot_make_the_reader_allocate_far_more_than_the_file(case: str) -> None:
    # Prepare
    data, factor = ALLOCATION_CASES[case]

    # Execute
    peak = peak_allocation(data, 2**24)

    # Assert: 64 KiB covers the reader's fixed overhead.
    assert peak <= factor * len(data) + 64 * KIB, f"peak {peak} for a {len(data)}-byte file"


def test_decoded_tensors_are_independent_writable_copies() -> None:
    # Prepare
    data = bytearray(write_safetensors({"a": np.ones(3, np.float32), "b": np.full((2, 2), 2.0, np.float32)}))

    # Execute
    tensors, _ = read_safetensors(bytes(data), LIMIT)
    tensors["a"][:] = 7.0
    data[-4:] = b"\x00\x00\x80\x7f"  # the file changing afterwards does not reach the tensors

    # Assert
    np.testing.assert_array_equal(tensors["b"], np.full((2, 2), 2.0, np.float32))
    np.testing.assert_array_equal(tensors["a"], np.full(3, 7.0, np.float32))
    assert tensors["b"].flags.writeable


@pytest.mark.parametrize(
    "header",
    [
        {"x" * MIB: entry([4], 0, 16, "F64")},
        {"w": entry([4], 0, 16, "F" * MIB)},
        {"a": entry([2], 0, 8), "z" * MIB: entry([2], 4, 12)},
    ],
    ids=["long name", "long dtype", "long name in an overlap"],
)
def test_error_for_a_megabyte_long_name_is_one_short_line(header: dict) -> None:
    # Execute
    with pytest.raises(InvalidUpdateError) as error:
        read_safetensors(raw_file(header, FOUR), 4 * MIB)

    # Assert
    assert "\n" not in str(error.value)
    assert len(str(error.value)) < 300
