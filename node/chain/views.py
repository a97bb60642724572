"""Contract views over JSON-RPC without web3's per-call machinery, and the ABI decoding they share
with the embedded chain's calls (node/chain/embedded_calls.py).

A web3 `contract.functions.f(x).call()` rebuilds the function from the ABI, validates its
arguments, formats the request through the middleware stack and the result through the
response formatters: ~3-4 ms of client CPU per view, against ~0.6 ms for the same `eth_call`
sent as raw hex through the provider. A daemon makes several views per loop iteration, 16
daemons share two cores, and these views were the largest part of a round's CPU
(scripts/bench_round.py, docs/benchmarks.md part (a)). `RpcViews` encodes the call data with
eth_abi from a table built once per ABI, sends it with `provider.make_request`, and decodes
the output as web3 does (checksummed addresses, lists for arrays, tuples for structs); a
revert raises web3's `ContractLogicError` carrying the revert data, like `fn.call()`.

`ReadCache` lets a caller that reads the same views several times in a short stretch (the
daemon's protocol loop: its own look at a task, then the step's) pay for each once.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from node.errors import ChainError


def _abi_type(entry: dict[str, Any]) -> str:
    if entry["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in entry["components"]) + ")" + entry["type"][5:]
    return str(entry["type"])


def _normalize(value: Any, typ: str) -> Any:
    """As web3 returns it: checksummed addresses, lists for arrays, tuples for structs."""
    if typ.endswith("]"):
        inner = typ[: typ.rindex("[")]
        return [_normalize(v, inner) for v in value]
    if typ.startswith("("):
        inner_types = _split_tuple(typ[1:-1])
        return tuple(_normalize(v, t) for v, t in zip(value, inner_types))
    if typ == "address":
        return to_checksum_address(value)
    return value


def _split_tuple(body: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return [p for p in parts if p]


def decode_outputs(types: list[str], output: bytes) -> Any:
    """A call's output as web3 returns it: one value bare, several as a list."""
    decoded = [_normalize(v, t) for v, t in zip(abi_decode(types, output), types)]
    return decoded[0] if len(decoded) == 1 else decoded


class RpcViews:
    """`call(name, *args)`: the contract's view `name` at `address` as an eth_call on the latest block.

    Only for functions without overloads (FedLedger has none); arguments are what eth_abi
    encodes (ints, checksummed address strings, bytes)."""

    def __init__(self, w3: Web3, address: str, abi: list[dict[str, Any]]) -> None:
        self._provider = w3.provider
        self._address = address
        # name -> (selector, input types, output types), built once: the ABI never changes.
        self._functions: dict[str, tuple[bytes, list[str], list[str]]] = {}
        for entry in abi:
            if entry.get("type") != "function":
                continue
            inputs = [_abi_type(i) for i in entry["inputs"]]
            selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(inputs)})")
            self._functions[entry["name"]] = (selector, inputs, [_abi_type(o) for o in entry["outputs"]])

    def calldata(self, name: str, args: tuple[Any, ...]) -> str:
        selector, inputs, _ = self._functions[name]
        return "0x" + (selector + abi_encode(inputs, list(args))).hex()

    def call(self, name: str, data: str) -> Any:
        """The view's decoded result for `data` (from `calldata`)."""
        response = self._provider.make_request("eth_call", [{"to": self._address, "data": data}, "latest"])  # type: ignore[arg-type]
        error = response.get("error")
        if error is not None:
            message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            revert = error.get("data") if isinstance(error, dict) else None
            if isinstance(revert, str) and revert.startswith("0x") or "revert" in message.lower():
                raise ContractLogicError(f"{name}: {message}", data=revert if isinstance(revert, str) else None)
            raise ChainError(f"eth_call {name} failed: {message[:300]}")
        result = response.get("result")
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainError(f"eth_call {name} returned no data")
        return decode_outputs(self._functions[name][2], bytes.fromhex(result[2:]))


class ReadCache:
    """View results kept while a caller holds `scope()` open, dropped when the last scope closes
    and whenever this client sends a transaction (its own writes must be seen at once).

    Others' transactions are not seen inside a scope: a scope is for a short stretch that wants
    one consistent look (the daemon's loop iteration), and a stale look costs that stretch a
    reverted race or a skipped step, which the next iteration repeats on fresh reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._values: dict[str, Any] = {}
        self._generation = 0  # bumped by clear(): a read begun before a send must not be kept after it

    @contextmanager
    def scope(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._values = {}

    def get(self, key: str) -> tuple[bool, Any]:
        values = self._values
        if self._depth and key in values:
            return True, values[key]
        return False, None

    def generation(self) -> int:
        """Taken before a read, handed to `put`: a value read across a `clear` is not kept."""
        return self._generation

    def put(self, key: str, value: Any, generation: int) -> None:
        with self._lock:
            if self._depth and generation == self._generation:
                self._values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._values = {}
