"""Helpers for FedLedger contract tests: an in-process EVM, artifact deployment, custom-error checks.

Imported by name from tests in this folder (a unique module name, so it cannot collide with another
folder's conftest.py).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.types import TxReceipt

ARTIFACTS = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
WAD = 10**18
MIN_STAKE = 10**16  # 0.01 ETH
REWARD = 10**18  # 1 ETH pool for the default task
MODEL_CID = b"bafk-initial-model"
SPEC_CID = b"bafk-task-spec"


def load_artifact(name: str) -> dict[str, Any]:
    """Return the committed compiler artifact of contract `name`."""
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


def revert_data(exc: BaseException) -> bytes:
    """Return the raw revert data carried by a failed call or transaction.

    web3's JSON-RPC path raises ContractCustomError with hex `data`; the
    eth-tester provider raises TransactionFailed("execution reverted: b'...'")
    with the bytes' repr, which is parsed back here.
    """
    if isinstance(exc, ContractCustomError):
        return bytes.fromhex(str(exc.data).removeprefix("0x"))
    message = str(exc.args[0])
    prefix = "execution reverted: "
    assert message.startswith(prefix + "b"), f"not a custom-error revert: {message!r}"
    return ast.literal_eval(message[len(prefix) :])


class Chain:
    """One eth-tester EVM with web3 in front, plus helpers to deploy, transact and expect reverts."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
        self.accounts: list[str] = list(self.w3.eth.accounts)

    def deploy(self, name: str, *args: Any, sender: str | None = None) -> Contract:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx = factory.constructor(*args).transact({"from": sender or self.accounts[0]})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    def send(self, call: Any, sender: str, value: int = 0) -> TxReceipt:
        """Transact `contract.functions.f(...)` from `sender`; return the successful receipt."""
        tx = call.transact({"from": sender, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1
        return receipt

    def fee(self, receipt: TxReceipt) -> int:
        """Return the wei the sender paid for gas."""
        return receipt["gasUsed"] * receipt["effectiveGasPrice"]

    def balance(self, address: str) -> int:
        return self.w3.eth.get_balance(address)

    @contextmanager
    def reverts(self, contract: Contract, error: str, *args: Any) -> Iterator[None]:
        """Assert that the block raises custom error `error(args...)` of `contract`'s ABI."""
        abi = next(e for e in contract.abi if e["type"] == "error" and e["name"] == error)
        types = [i["type"] for i in abi["inputs"]]
        selector = function_signature_to_4byte_selector(f"{error}({','.join(types)})")
        with pytest.raises((TransactionFailed, ContractCustomError)) as info:
            yield
        data = revert_data(info.value)
        assert data[:4] == selector, f"expected {error}, got selector 0x{data[:4].hex()}"
        decoded = list(abi_decode(types, data[4:]))
        decoded = [to_checksum_address(v) if t == "address" else v for v, t in zip(decoded, types)]
        assert decoded == list(args)
