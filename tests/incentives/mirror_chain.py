"""The chain side of the mirror tests: a FedLedger with warmed-up nodes and a snapshot to rewind to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_tester import EthereumTester
from web3 import Web3
from web3.contract import Contract


@dataclass
class RegisteredLedger:
    """A FedLedger with four registered, warmed-up nodes and a snapshot to rewind to between examples."""

    tester: EthereumTester
    w3: Web3
    ledger: Contract
    owner: str  # creates and finalizes tasks; not a node
    nodes: list[str]
    snapshot: int

    def transact(self, call: Any, sender: str, value: int = 0) -> None:
        receipt = self.w3.eth.wait_for_transaction_receipt(call.transact({"from": sender, "value": value}))
        assert receipt["status"] == 1

    def rewind(self) -> None:
        self.tester.revert_to_snapshot(self.snapshot)
