"""FedLedgerClient: the one object through which the rest of the node uses the FedLedger contract.

Transactions are signed locally with an eth-account key and sent raw, so the
same code path drives the embedded chain (eth-tester/py-evm) and a JSON-RPC
node (anvil, or any EVM chain). A revert surfaces as a `ContractRevert` (a
`ChainError`) that carries the contract's custom error and its arguments, so
callers can tell one error from another without reading the message.

Callers ask this client, never web3, for what the chain holds: views, logs,
the head block, gas spent. The web3 objects stay inside `node.chain`.

A round, as the contract runs it (SPEC §4): `draw_committee` -> members
`commit` -> `reveal` -> the designated proposer `propose`s -> the other
participants `attest` -> anyone `finalize`s. `advance` applies timeouts.

The client's parts: its logs (events.py), its reads (reads.py), its sends (sends.py); the
values they return are in types.py, and revert decoding in reverts.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3Exception

from node.chain.artifacts import load_artifact
from node.chain.sends import EMBEDDED_GAS_LIMIT, ClientSends
from node.chain.types import CONTRACT
from node.chain.views import ReadCache, RpcViews
from node.errors import ChainError

if TYPE_CHECKING:  # eth-account and py-evm are slow to import; a read-only client over RPC needs neither
    from eth_account.signers.local import LocalAccount


def _is_embedded(w3: Web3) -> bool:
    """Whether `w3` is the in-process chain. Asked without importing eth-tester: a provider of
    that class exists only if its module was loaded."""
    module = sys.modules.get("web3.providers.eth_tester")
    return module is not None and isinstance(w3.provider, module.EthereumTesterProvider)


class FedLedgerClient(ClientSends):
    """A FedLedger contract at `address`, acting as `account` (None: read-only).

    Assembled from its parts: logs (node/chain/events.py), reads (node/chain/reads.py) and
    sends (node/chain/sends.py)."""

    def __init__(self, w3: Web3, address: str, account: LocalAccount | None = None) -> None:
        self.w3 = w3
        self.abi = load_artifact(CONTRACT)["abi"]
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self.account = account
        self._embedded = _is_embedded(w3)
        self._caller = None
        # Views over RPC, sent raw; the read cache is shared with as_account twins (one chain, one look).
        self._rpc_views = RpcViews(w3, self.address, self.abi)
        self._read_cache = ReadCache()
        self._chain_id: int | None = None  # asked at the first raw send
        if self._embedded:
            from node.chain.embedded_calls import EmbeddedCaller

            self._caller = EmbeddedCaller(w3, EMBEDDED_GAS_LIMIT)
        # Revealed CIDs by (task, round, sender, CID hash): a reveal never changes once made, and
        # reading it back from the logs is the slow part of round_updates. Shared with as_account twins.
        self._revealed: dict[tuple[int, int, str, bytes], str] = {}
        self._round_selectors: set[bytes] | None = None
        self._event_names: dict[bytes, str] = {}

    def as_account(self, account: LocalAccount) -> "FedLedgerClient":
        """The same contract, sending as another account."""
        twin = FedLedgerClient.__new__(FedLedgerClient)
        twin.__dict__.update(self.__dict__)  # shares the contract object and the embedded caller
        twin.account = account
        return twin


def deploy_fedledger(w3: Web3, account: LocalAccount, min_stake_wei: int) -> tuple[FedLedgerClient, dict[str, Any]]:
    """Deploy a fresh FedLedger contract; returns a client acting as `account` and the receipt."""
    artifact = load_artifact(CONTRACT)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    try:
        tx = factory.constructor(min_stake_wei).build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
        )
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
    except Web3Exception as exc:
        raise ChainError(f"deploying {CONTRACT} failed: {exc}") from None
    except (ConnectionError, OSError) as exc:
        raise ChainError(f"cannot reach the chain: {exc}") from None
    if receipt["status"] != 1 or not receipt.get("contractAddress"):
        raise ChainError(f"deploying {CONTRACT} reverted")
    return FedLedgerClient(w3, receipt["contractAddress"], account), dict(receipt)
