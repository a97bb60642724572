"""The chain side of the mirror tests: a FedLedger with warmed-up nodes and a snapshot to rewind to."""

from __future__ import annotations

from dataclasses import dataclass

from tests.contracts.ledger_harness import Chain, Protocol


@dataclass
class RegisteredLedger:
    """A FedLedger with four registered, warmed-up nodes and a snapshot to rewind to between examples."""

    chain: Chain
    proto: Protocol
    owner: str  # creates tasks; not a node
    nodes: list[str]
    snapshot: int

    def rewind(self) -> None:
        self.chain.tester.revert_to_snapshot(self.snapshot)
