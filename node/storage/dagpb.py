"""Hand-written protobuf for dag-pb nodes and UnixFS file metadata.

Follows the dag-pb spec (https://ipld.io/specs/codecs/dag-pb/spec/) and the
UnixFS v1 schema (https://github.com/ipfs/specs/blob/main/UNIXFS.md):

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
    message Data   { required DataType Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
                     repeated uint64 blocksizes = 4; optional uint64 hashType = 5;
                     optional uint64 fanout = 6; optional uint32 mode = 7; optional UnixTime mtime = 8; }

Encoding writes the bytes kubo (go-merkledag) writes: every link before the
Data field, links as Hash, Name (present even when empty), Tsize, and
`blocksizes` non-packed. Decoding is strict, because its input comes from
peers: only those fields with their wire types, Links before Data, no field
twice, minimal varints, and every length inside the buffer. Decoders raise
StorageError; nothing here recurses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node.errors import CIDError, StorageError
from node.storage.cid import Cid, decode_cid_bytes, encode_varint

# UnixFS DataType values that can appear in a file's DAG.
UNIXFS_RAW = 0
UNIXFS_FILE = 2
_UNIXFS_TYPE_NAMES = {0: "Raw", 1: "Directory", 2: "File", 3: "Metadata", 4: "Symlink", 5: "HAMTShard"}

_WIRE_VARINT = 0
_WIRE_LEN = 2
_MAX_U64 = (1 << 64) - 1


# --- encoding --------------------------------------------------------------------------------


# Protobuf's base-128 varint is the same unsigned LEB128 that multiformats use.
pb_varint = encode_varint


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes([(tag << 3) | _WIRE_LEN]) + pb_varint(len(payload)) + payload


def encode_link(cid_bytes: bytes, tsize: int) -> bytes:
    """A serialized PBLink with an empty (but present) Name, as kubo writes file links."""
    return _len_field(1, cid_bytes) + b"\x12\x00" + b"\x18" + pb_varint(tsize)


def encode_node(links: list[bytes], data: bytes | None) -> bytes:
    """A serialized PBNode: the encoded links (field 2) first, then Data (field 1)."""
    parts = [_len_field(2, link) for link in links]
    if data is not None:
        parts.append(_len_field(1, data))
    return b"".join(parts)


def unixfs_file_header(chunk_len: int | None) -> bytes:
    """UnixFS `Data` of a File node up to its payload: Type, then Data's tag and length.

    The caller appends the chunk bytes and then `unixfs_file_trailer`, so a
    leaf is assembled with a single copy of its chunk.
    """
    head = b"\x08\x02"  # Type = File
    if chunk_len is not None:
        head += b"\x12" + pb_varint(chunk_len)
    return head


def unixfs_file_trailer(filesize: int, blocksizes: list[int]) -> bytes:
    """The fields after Data: filesize (always present, even 0) and non-packed blocksizes."""
    return b"\x18" + pb_varint(filesize) + b"".join(b"\x20" + pb_varint(bs) for bs in blocksizes)


def encode_unixfs_file(filesize: int, blocksizes: list[int], data: bytes | None = None) -> bytes:
    """A serialized UnixFS Data message of Type File."""
    head = unixfs_file_header(None if data is None else len(data))
    return head + (data or b"") + unixfs_file_trailer(filesize, blocksizes)


# --- decoding --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PBLink:
    """One decoded dag-pb link."""

    cid: Cid
    name: str
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A decoded dag-pb node; `data` is a view into the block (no copy)."""

    links: list[PBLink]
    data: memoryview | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The UnixFS fields a file reader needs; `data` is a view into the block."""

    type: int
    data: memoryview | None
    filesize: int | None
    blocksizes: list[int] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        """Human name of the UnixFS type, for messages."""
        return _UNIXFS_TYPE_NAMES.get(self.type, f"unknown({self.type})")


class _Reader:
    """A bounds-checked cursor over a protobuf message."""

    __slots__ = ("buf", "pos", "end", "what")

    def __init__(self, buf: memoryview, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.what = what

    def done(self) -> bool:
        return self.pos >= self.end

    def fail(self, reason: str) -> StorageError:
        return StorageError(f"malformed {self.what}: {reason} (at byte {self.pos})")

    def varint(self) -> int:
        value = 0
        shift = 0
        buf, pos = self.buf, self.pos
        for i in range(10):
            if pos + i >= self.end:
                raise self.fail("truncated varint")
            byte = buf[pos + i]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise self.fail("non-minimal varint")
                if value > _MAX_U64:
                    raise self.fail("varint exceeds 64 bits")
                self.pos = pos + i + 1
                return value
            shift += 7
        raise self.fail("varint longer than 10 bytes")

    def key(self) -> tuple[int, int]:
        key = self.varint()
        return key >> 3, key & 7

    def bytes_field(self) -> memoryview:
        length = self.varint()
        if length > self.end - self.pos:
            raise self.fail(f"length {length} runs past the end of the message")
        start = self.pos
        self.pos += length
        return self.buf[start : self.pos]


def decode_node(block: bytes | memoryview, cid: Cid | str = "?") -> PBNode:
    """Decode a dag-pb block strictly; raise StorageError naming `cid` if it is malformed."""
    rd = _Reader(memoryview(block), f"dag-pb node {cid}")
    links: list[PBLink] = []
    data: memoryview | None = None
    while not rd.done():
        tag, wire = rd.key()
        if tag == 2 and wire == _WIRE_LEN:
            if data is not None:
                raise rd.fail("link after Data (dag-pb requires Links first)")
            links.append(_decode_link(rd.bytes_field(), rd))
        elif tag == 1 and wire == _WIRE_LEN:
            if data is not None:
                raise rd.fail("Data field twice")
            data = rd.bytes_field()
        else:
            raise rd.fail(f"unexpected field {tag} with wire type {wire}")
    return PBNode(links, data)


def _decode_link(buf: memoryview, parent: _Reader) -> PBLink:
    rd = _Reader(buf, parent.what + " link")
    cid: Cid | None = None
    name = ""
    tsize: int | None = None
    last_tag = 0
    while not rd.done():
        tag, wire = rd.key()
        # Fields in order and at most once: dag-pb's canonical form.
        if tag <= last_tag:
            raise rd.fail(f"field {tag} out of order or repeated")
        last_tag = tag
        if tag == 1 and wire == _WIRE_LEN:
            try:
                cid = decode_cid_bytes(rd.bytes_field())
            except CIDError as exc:
                raise rd.fail(str(exc)) from exc
        elif tag == 2 and wire == _WIRE_LEN:
            try:
                name = bytes(rd.bytes_field()).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise rd.fail("link name is not UTF-8") from exc
        elif tag == 3 and wire == _WIRE_VARINT:
            tsize = rd.varint()
        else:
            raise rd.fail(f"unexpected field {tag} with wire type {wire}")
    if cid is None:
        raise rd.fail("link without Hash")
    return PBLink(cid, name, tsize)


def decode_unixfs(buf: memoryview, cid: Cid | str = "?") -> UnixFSData:
    """Decode a UnixFS Data message strictly; raise StorageError naming `cid` if malformed."""
    rd = _Reader(buf, f"UnixFS data in {cid}")
    seen: set[int] = set()
    fs_type: int | None = None
    data: memoryview | None = None
    filesize: int | None = None
    blocksizes: list[int] = []
    while not rd.done():
        tag, wire = rd.key()
        if tag != 4 and tag in seen:
            raise rd.fail(f"field {tag} repeated")
        seen.add(tag)
        if tag == 1 and wire == _WIRE_VARINT:
            fs_type = rd.varint()
        elif tag == 2 and wire == _WIRE_LEN:
            data = rd.bytes_field()
        elif tag == 3 and wire == _WIRE_VARINT:
            filesize = rd.varint()
        elif tag == 4 and wire == _WIRE_VARINT:
            blocksizes.append(rd.varint())
        elif tag in (5, 6, 7) and wire == _WIRE_VARINT:
            rd.varint()  # hashType / fanout / mode: irrelevant to a file's bytes
        elif tag == 8 and wire == _WIRE_LEN:
            rd.bytes_field()  # mtime: metadata only
        else:
            raise rd.fail(f"unexpected field {tag} with wire type {wire}")
    if fs_type is None:
        raise rd.fail("missing Type")
    return UnixFSData(fs_type, data, filesize, blocksizes)
