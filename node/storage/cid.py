"""Content identifiers (CIDs) as kubo prints them, written from the multiformats specs.

Implements the parts of the multiformats specifications that `ipfs add` uses:

- unsigned-varint (https://github.com/multiformats/unsigned-varint),
- multihash, sha2-256 only (code 0x12, 32-byte digest),
- CIDv0 (the base58btc text of a sha2-256 multihash, implicitly dag-pb) and
  CIDv1 (`<version><codec><multihash>`, text in multibase base32 lowercase
  without padding, prefix "b"), with the codecs raw (0x55) and dag-pb (0x70)
  (https://github.com/multiformats/cid).

Every decoder here is strict: it accepts only the canonical encoding, so that
one piece of content has exactly one CID string and a CID printed back equals
the string it was parsed from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from node.errors import CIDError, IntegrityError

#: Multicodec codes used by `ipfs add`.
CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
#: Multihash code and digest length of sha2-256, the only hash we accept.
MH_SHA2_256 = 0x12
SHA2_256_LEN = 32

_SUPPORTED_CODECS = {CODEC_RAW: "raw", CODEC_DAG_PB: "dag-pb"}
# The multihash prefix of every sha2-256 digest; a CIDv0 in binary is exactly this + digest.
_MH_PREFIX = bytes([MH_SHA2_256, SHA2_256_LEN])

# Bitcoin's base58 alphabet (no 0, O, I, l), as multibase "base58btc".
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58_ALPHABET)}
_B32_LOWER = re.compile(r"[a-z2-7]*")
# A multiformats varint is at most 9 bytes (63 bits), per the unsigned-varint spec.
_MAX_VARINT_BYTES = 9
# Longest CID text we even try to decode: a CIDv1 here is 37 bytes -> 60 base32 characters.
_MAX_CID_TEXT = 128


# --- unsigned varint -------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a minimal unsigned varint at `buf[pos:]`; return (value, position after it).

    Raises ValueError on truncation, on more than 9 bytes, and on non-minimal
    encodings (a trailing 0x00 byte), because the multiformats spec requires
    the minimal form and accepting others would give one CID two spellings.
    """
    value = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ValueError("non-minimal varint")
            return value, pos + i + 1
        shift += 7
    raise ValueError("varint longer than 9 bytes")


# --- base58btc -------------------------------------------------------------------------------


def b58encode(data: bytes) -> str:
    """Encode bytes as base58btc (leading zero bytes become leading '1's)."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    chars: list[str] = []
    while num:
        num, rem = divmod(num, 58)
        chars.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(chars))


def b58decode(text: str) -> bytes:
    """Decode base58btc; raise ValueError on a character outside the alphabet."""
    num = 0
    for ch in text:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            raise ValueError(f"invalid base58 character {ch!r}")
        num = num * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


# --- base32 (RFC 4648, lowercase, unpadded: multibase "b") -----------------------------------


def b32encode_lower(data: bytes) -> str:
    """Encode as RFC 4648 base32, lowercase, without '=' padding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode_lower(text: str) -> bytes:
    """Decode lowercase unpadded base32, rejecting any non-canonical spelling."""
    if not _B32_LOWER.fullmatch(text):
        raise ValueError("not lowercase base32")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        data = base64.b32decode(padded)
    except binascii.Error as exc:
        raise ValueError(f"bad base32 length or padding: {exc}") from exc
    # b32decode ignores non-zero bits after the last byte; re-encoding catches them.
    if b32encode_lower(data) != text:
        raise ValueError("non-canonical base32 (trailing bits set)")
    return data


# --- CID -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID: version 0 or 1, a codec (raw or dag-pb) and a sha2-256 digest."""

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        # Validate here so no code path can build a CID that would print as garbage.
        if self.version not in (0, 1):
            raise CIDError(f"unsupported CID version {self.version}")
        if self.codec not in _SUPPORTED_CODECS:
            raise CIDError(f"unsupported CID codec 0x{self.codec:x}")
        if self.version == 0 and self.codec != CODEC_DAG_PB:
            raise CIDError("a CIDv0 is always dag-pb")
        if len(self.digest) != SHA2_256_LEN:
            raise CIDError(f"sha2-256 digest must be 32 bytes, got {len(self.digest)}")

    @property
    def multihash(self) -> bytes:
        """The sha2-256 multihash: <0x12><0x20><digest>."""
        return _MH_PREFIX + self.digest

    def to_bytes(self) -> bytes:
        """Binary CID, as stored in dag-pb link hashes."""
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode_lower(self.to_bytes())

    @property
    def codec_name(self) -> str:
        """Human name of the codec, for messages."""
        return _SUPPORTED_CODECS[self.codec]


def cid_for_block(data: bytes | memoryview, codec: int, version: int = 1) -> Cid:
    """The CID of one block: sha2-256 of its bytes under the given codec and version."""
    return Cid(version, codec, hashlib.sha256(data).digest())


def decode_cid_bytes(raw: bytes | memoryview) -> Cid:
    """Decode a binary CID (as found in a dag-pb link); raise CIDError if malformed."""
    raw = bytes(raw)
    try:
        if len(raw) == 2 + SHA2_256_LEN and raw[:2] == _MH_PREFIX:
            return Cid(0, CODEC_DAG_PB, raw[2:])
        version, pos = decode_varint(raw, 0)
        if version != 1:
            raise ValueError(f"unsupported CID version {version}")
        codec, pos = decode_varint(raw, pos)
        code, pos = decode_varint(raw, pos)
        length, pos = decode_varint(raw, pos)
    except ValueError as exc:
        raise CIDError(f"malformed binary CID {raw.hex()}: {exc}") from exc
    if code != MH_SHA2_256 or length != SHA2_256_LEN:
        raise CIDError(
            f"malformed binary CID {raw.hex()}: only sha2-256 multihashes are supported "
            f"(got code 0x{code:x}, length {length})"
        )
    if len(raw) - pos != SHA2_256_LEN:
        raise CIDError(f"malformed binary CID {raw.hex()}: digest is {len(raw) - pos} bytes, want 32")
    if codec not in _SUPPORTED_CODECS:
        raise CIDError(f"unsupported codec 0x{codec:x} in binary CID {raw.hex()}")
    return Cid(1, codec, raw[pos:])


def parse_cid(text: str) -> Cid:
    """Parse CID text: CIDv0 ("Qm..." base58btc) or CIDv1 in base32 ("b...") or base58btc ("z...").

    Raises CIDError naming the string for anything malformed or unsupported.
    `str()` of the result is the canonical text (CIDv1 always in base32).
    """
    if not isinstance(text, str):
        raise CIDError(f"CID must be a string, got {type(text).__name__}: {text!r}")
    # Bound before decoding: base58 decoding is quadratic in the length.
    if not text or len(text) > _MAX_CID_TEXT:
        raise CIDError(f"malformed CID {text[:_MAX_CID_TEXT]!r}: length {len(text)} is not a CID's")
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = b58decode(text)
            if len(raw) != 2 + SHA2_256_LEN or raw[:2] != _MH_PREFIX:
                raise ValueError("CIDv0 must be a sha2-256 multihash")
            cid = Cid(0, CODEC_DAG_PB, raw[2:])
        elif text[0] == "b":
            cid = _parse_v1_binary(b32decode_lower(text[1:]))
        elif text[0] == "z":
            raw = b58decode(text[1:])
            if b58encode(raw) != text[1:]:
                raise ValueError("non-canonical base58btc")
            cid = _parse_v1_binary(raw)
        else:
            raise ValueError("unknown multibase prefix (want 'Qm...' CIDv0, 'b' base32 or 'z' base58btc)")
    except (ValueError, CIDError) as exc:
        raise CIDError(f"malformed CID {text!r}: {exc}") from exc
    if cid.version == 0 and str(cid) != text:
        raise CIDError(f"malformed CID {text!r}: non-canonical base58btc")
    return cid


def _parse_v1_binary(raw: bytes) -> Cid:
    """Decode a CIDv1 binary; a bare multihash (CIDv0 binary) is not valid multibase text."""
    if raw[:2] == _MH_PREFIX:
        raise ValueError("CIDv0 must be written in base58btc, not multibase")
    cid = decode_cid_bytes(raw)
    if cid.version != 1:
        raise ValueError("expected CIDv1")
    return cid


def verify_block(cid: Cid | str, data: bytes | memoryview) -> None:
    """Raise IntegrityError naming `cid` unless sha2-256(data) is its digest."""
    parsed = cid if isinstance(cid, Cid) else parse_cid(cid)
    if hashlib.sha256(data).digest() != parsed.digest:
        raise IntegrityError(f"block {parsed} does not match its CID (sha2-256 mismatch)")
