"""Revert data as the contract's custom errors: the only revert decoder of the node.

Every path that meets revert data (a failed call, a failed estimate, a replayed or traced
mined transaction) comes through `decode_revert`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    """Selector -> (error name, argument types) for every custom error in the ABI."""
    table: dict[bytes, tuple[str, list[str]]] = {}
    for entry in abi:
        if entry.get("type") != "error":
            continue
        types = [inp["type"] for inp in entry.get("inputs", [])]
        selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
        table[selector] = (entry["name"], types)
    return table


@dataclass(frozen=True)
class DecodedRevert:
    name: str
    arguments: tuple[Any, ...]  # addresses checksummed
    text: str  # `Name(arg, ...)` as the node has always shown it (addresses in lower case)


def decode_revert(abi: list[dict[str, Any]], data: str | bytes | None) -> DecodedRevert | None:
    """Revert data as one of the ABI's custom errors, or None when it is not a known error.
    The only revert decoder: every path that meets revert data (a failed call, a failed
    estimate, a replayed or traced mined transaction) comes through here."""
    if data is None:
        return None
    try:
        raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else bytes(data)
    except ValueError:
        return None
    if len(raw) < 4:
        return None
    known = _error_table(abi).get(raw[:4])
    if known is None:
        return None
    name, types = known
    try:
        args = abi_decode(types, raw[4:])
    except Exception:  # malformed revert payload: still name the error
        return DecodedRevert(name, (), name)
    shown = ", ".join(a.hex() if isinstance(a, bytes) else str(a) for a in args)
    normalized = tuple(to_checksum_address(a) if t == "address" else a for a, t in zip(args, types))
    return DecodedRevert(name, normalized, f"{name}({shown})")


def describe_revert(abi: list[dict[str, Any]], data: str | bytes | None) -> str | None:
    """Render revert data as `ErrorName(arg, ...)`, or None when it is not a known error."""
    decoded = decode_revert(abi, data)
    return decoded.text if decoded else None
