"""The one module that wraps the FedLedger contract for the rest of the node.

Transactions are signed locally with an eth-account key and sent raw, so the
same code path drives the embedded chain (eth-tester/py-evm) and a JSON-RPC
node (anvil, or any EVM chain). A revert surfaces as a `ChainError` that names
the contract's custom error and its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD

from node.chain.artifacts import load_artifact
from node.errors import ChainError

CONTRACT = "FedLedger"


@dataclass(frozen=True)
class TaskInfo:
    owner: str
    rounds: int
    committee_size: int
    rule: int
    max_samples: int
    current_round: int  # rounds are numbered from 1; rounds + 1 once the task is finished
    reward_remaining: int
    spec_cid: str

    @property
    def finished(self) -> bool:
        return self.current_round > self.rounds


@dataclass(frozen=True)
class RoundUpdate:
    sender: str
    cid: str
    num_samples: int


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


def describe_revert(abi: list[dict[str, Any]], data: str | bytes | None) -> str | None:
    """Render revert data as `ErrorName(arg, ...)`, or None when it is not a known error."""
    if data is None:
        return None
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else bytes(data)
    if len(raw) < 4:
        return None
    known = _error_table(abi).get(raw[:4])
    if known is None:
        return None
    name, types = known
    try:
        args = abi_decode(types, raw[4:])
    except Exception:  # malformed revert payload: still name the error
        return name
    shown = ", ".join(a.hex() if isinstance(a, bytes) else str(a) for a in args)
    return f"{name}({shown})"


class FedLedgerClient:
    """A FedLedger contract at `address`, acting as `account` (None: read-only)."""

    def __init__(self, w3: Web3, address: str, account: LocalAccount | None = None) -> None:
        self.w3 = w3
        self.abi = load_artifact(CONTRACT)["abi"]
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self.account = account

    def as_account(self, account: LocalAccount) -> "FedLedgerClient":
        """The same contract, sending as another account."""
        return FedLedgerClient(self.w3, self.address, account)

    # -- sending ----------------------------------------------------------------

    def _transact(self, call: Any, value: int = 0) -> dict[str, Any]:
        if self.account is None:
            raise ChainError("this client has no account to send transactions with")
        sender = self.account.address
        try:
            tx = call.build_transaction(
                {"from": sender, "value": value, "nonce": self.w3.eth.get_transaction_count(sender, "pending")}
            )
            signed = self.account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        except ContractLogicError as exc:
            reason = describe_revert(self.abi, getattr(exc, "data", None)) or str(exc)
            raise ChainError(f"{call.fn_name} reverted: {reason}") from None
        except Web3Exception as exc:
            raise ChainError(f"{call.fn_name} failed: {exc}") from None
        if receipt["status"] != 1:
            raise ChainError(f"{call.fn_name} reverted in transaction {tx_hash.hex()}")
        return dict(receipt)

    def register(self, peer_id: str, multiaddrs: Sequence[str], stake_wei: int) -> dict[str, Any]:
        return self._transact(self.contract.functions.register(peer_id, list(multiaddrs)), value=stake_wei)

    def create_task(
        self,
        model_cid: str,
        spec_cid: str,
        rounds: int,
        committee_size: int,
        rule: int,
        max_samples: int,
        reward_wei: int,
    ) -> tuple[int, dict[str, Any]]:
        """Create a task; returns (task id, receipt)."""
        receipt = self._transact(
            self.contract.functions.createTask(
                model_cid.encode(), spec_cid.encode(), rounds, committee_size, rule, max_samples
            ),
            value=reward_wei,
        )
        events = self.events(receipt, "TaskCreated")
        if not events:
            raise ChainError("createTask succeeded but emitted no TaskCreated event")
        return int(events[0]["args"]["taskId"]), receipt

    def submit_update(self, task_id: int, round_: int, cid: str, num_samples: int) -> dict[str, Any]:
        return self._transact(self.contract.functions.submitUpdate(task_id, round_, cid.encode(), num_samples))

    def finalize_round(self, task_id: int, round_: int, global_cid: str, scores_wad: Sequence[int]) -> dict[str, Any]:
        return self._transact(
            self.contract.functions.finalizeRound(task_id, round_, global_cid.encode(), [int(s) for s in scores_wad])
        )

    def withdraw(self) -> dict[str, Any]:
        return self._transact(self.contract.functions.withdraw())

    # -- reading ----------------------------------------------------------------

    def events(self, receipt: dict[str, Any], name: str) -> list[Any]:
        """The `name` events this contract emitted in `receipt` (other logs are skipped)."""
        return list(getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD))

    def reputation_of(self, node: str) -> int:
        return int(self.contract.functions.reputationOf(to_checksum_address(node)).call())

    def pending_rewards(self, account: str) -> int:
        return int(self.contract.functions.pendingRewards(to_checksum_address(account)).call())

    def global_model(self, task_id: int) -> tuple[str, int]:
        cid, round_ = self.contract.functions.globalModel(task_id).call()
        return bytes(cid).decode(), int(round_)

    def task_info(self, task_id: int) -> TaskInfo:
        owner, rounds, k, rule, max_samples, current, remaining, spec = self.contract.functions.taskInfo(task_id).call()
        return TaskInfo(owner, rounds, k, rule, max_samples, current, int(remaining), bytes(spec).decode())

    def round_updates(self, task_id: int, round_: int) -> list[RoundUpdate]:
        """The round's submissions in on-chain order, which is the canonical aggregation order."""
        senders, cids, samples = self.contract.functions.roundUpdates(task_id, round_).call()
        return [RoundUpdate(s, bytes(c).decode(), int(n)) for s, c, n in zip(senders, cids, samples)]

    def node_info(self, node: str) -> tuple[bool, int, str, list[str]]:
        registered, stake, peer_id, addrs = self.contract.functions.nodeInfo(to_checksum_address(node)).call()
        return bool(registered), int(stake), peer_id, list(addrs)

    def min_stake(self) -> int:
        return int(self.contract.functions.minStake().call())


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
