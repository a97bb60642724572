"""The client's sends: transactions signed locally with an eth-account key and sent raw, one
method per contract function, and a revert raised as `ContractRevert` with the contract's custom
error, whether it surfaced at estimation or in a mined transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3Exception

from node.chain.reads import ClientReads
from node.chain.reverts import decode_revert
from node.chain.types import ContractRevert, all_available
from node.errors import ChainError
from node.taskspec import TaskParams

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

# Gas limit of every transaction on the embedded chain (its blocks allow ~30M); far above any
# FedLedger call, and cheap: only the gas used is paid.
EMBEDDED_GAS_LIMIT = 15_000_000


class ClientSends(ClientReads):
    """Transactions to the contract, sent as the client's account."""

    def _transact(self, call: Any, value: int = 0, next_block: bool = False) -> dict[str, Any]:
        """Sign and send `call`; `next_block` estimates gas against the pending block, for calls
        that are only valid after the latest block (anvil estimates at `latest` otherwise)."""
        if self.account is None:
            raise ChainError("this client has no account to send transactions with")
        sender = self.account.address
        try:
            return self._send(call, sender, value, next_block)
        finally:
            self._read_cache.clear()  # whatever it mined, or even if it failed, our views may have moved

    def _send(self, call: Any, sender: str, value: int, next_block: bool) -> dict[str, Any]:
        try:
            if not self._embedded and isinstance(self.w3.provider, HTTPProvider):
                tx = self._raw_fields(call, sender, value, next_block)
                signed = self.account.sign_transaction(tx)  # type: ignore[union-attr]
                tx_hash = HexBytes(self._rpc_checked(call.fn_name, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()]))
                return self._receipt(call, sender, value, tx_hash)
            fields: dict[str, Any] = {
                "from": sender, "value": value, "nonce": self.w3.eth.get_transaction_count(sender, "pending")
            }
            if self._embedded:
                # py-evm's estimate_gas is a binary search of ~10 executions, most of a simulated
                # round's time; one eth_call surfaces a revert (with its custom error) just as
                # well, and the real gas used is in the receipt either way.
                assert self._caller is not None
                self._caller.call(call, sender, value, pending=True)
                fields["gas"] = EMBEDDED_GAS_LIMIT
            elif next_block:
                try:
                    estimate = call.estimate_gas({"from": sender, "value": value}, block_identifier="pending")
                    fields["gas"] = estimate * 5 // 4
                except Web3Exception:
                    pass  # eth-tester has no pending estimate, but estimates on the next block anyway
            tx = call.build_transaction(fields)
            if not self._embedded and not next_block:
                # The estimate is for the chain as it is now; when members race (the last commit or
                # reveal of a phase writes more), a call estimated as "not last" may land last.
                tx["gas"] = int(tx["gas"]) * 5 // 4
            signed = self.account.sign_transaction(tx)  # type: ignore[union-attr]
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            return self._receipt(call, sender, value, tx_hash)
        except ContractLogicError as exc:
            raise self._revert(call.fn_name, getattr(exc, "data", None), str(exc)) from None
        except Web3Exception as exc:
            raise ChainError(f"{call.fn_name} failed: {exc}") from None

    def _raw_fields(self, call: Any, sender: str, value: int, next_block: bool) -> dict[str, Any]:
        """The transaction's fields as web3's build_transaction fills them (nonce, gas estimate,
        EIP-1559 fees: the node's tip, twice the base fee plus it), asked in one JSON-RPC batch
        without web3's middleware: four formatted requests cost a daemon ~10 ms of CPU per
        transaction (see node/chain/views.py)."""
        if self._chain_id is None:  # asked once: a chain never changes its ID
            self._chain_id = int(self._rpc("eth_chainId", []), 16)
        data = call._encode_transaction_data()
        probe = {"from": sender, "to": self.address, "data": data, "value": hex(value)}
        answers = self.w3.provider.make_batch_request([  # type: ignore[attr-defined]
            ("eth_getTransactionCount", [sender, "pending"]),
            ("eth_getBlockByNumber", ["latest", False]),
            ("eth_maxPriorityFeePerGas", []),
            ("eth_estimateGas", [probe, "pending" if next_block else "latest"]),
        ])  # fmt: skip
        if not isinstance(answers, list) or len(answers) != 4:
            raise ChainError(f"{call.fn_name} failed: the chain did not answer the batch ({str(answers)[:200]})")
        nonce, block, tip, estimate = (self._result(call.fn_name, a) for a in answers)
        tip = int(tip, 16)
        return {
            "from": sender, "to": self.address, "data": data, "value": value, "nonce": int(nonce, 16),
            # Padded either way: the estimate is for the chain as it is now; when members race (the
            # last commit or reveal of a phase writes more), a call estimated as "not last" may land last.
            "gas": int(estimate, 16) * 5 // 4,
            "maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * int(block.get("baseFeePerGas") or "0x0", 16) + tip,
            "chainId": self._chain_id, "type": 2,
        }  # fmt: skip

    def _rpc_checked(self, function: str, method: str, params: list[Any]) -> Any:
        return self._result(function, self.w3.provider.make_request(method, params))  # type: ignore[arg-type]

    def _result(self, function: str, answer: Any) -> Any:
        """A JSON-RPC answer's result; its error as the contract's revert when it carries revert data."""
        error = answer.get("error") if isinstance(answer, dict) else "no answer"
        if error is None:
            return answer["result"]
        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        data = error.get("data") if isinstance(error, dict) else None
        if isinstance(data, str) and data.startswith("0x") or "revert" in message.lower():
            raise self._revert(function, data if isinstance(data, str) else None, message)
        raise ChainError(f"{function} failed: {message[:300]}")

    def _receipt(self, call: Any, sender: str, value: int, tx_hash: Any) -> dict[str, Any]:
        """The mined transaction's receipt (web3's, formatted as `events` reads it); its revert as
        the contract's error."""
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if receipt["status"] != 1:
            data = self._mined_revert_data(call, sender, value, tx_hash, int(receipt["blockNumber"]))
            if decode_revert(self.abi, data) is not None:
                raise self._revert(call.fn_name, data, "")
            raise ChainError(f"{call.fn_name} reverted in transaction 0x{bytes(tx_hash).hex()}")
        return dict(receipt)

    def _revert(self, function: str, data: Any, fallback: str) -> ContractRevert:
        decoded = decode_revert(self.abi, data)
        if decoded is None:
            return ContractRevert(function, None, (), fallback)
        return ContractRevert(function, decoded.name, decoded.arguments, decoded.text)

    def _mined_revert_data(self, call: Any, sender: str, value: int, tx_hash: bytes, block: int) -> str | None:
        """The revert data of a transaction that was mined but failed (receipts do not carry it),
        or None when it cannot be recovered.

        On the embedded chain the transaction is re-run on its block's parent state. Over RPC,
        the node's call tracer reports the transaction's own output (anvil and geth have it);
        failing that, it is re-run as an eth_call on the parent block, which only reproduces
        the revert if the state it depended on was already there."""
        try:
            if self._caller is not None:
                self._caller.replay(call, sender, value, block)
                return None
            traced = self.w3.provider.make_request(
                "debug_traceTransaction", ["0x" + bytes(tx_hash).hex(), {"tracer": "callTracer"}]
            )
            result = traced.get("result") if isinstance(traced, dict) else None
            if isinstance(result, dict):  # the trace has the last word, revert data or none
                return str(result["output"]) if result.get("error") and result.get("output") else None
            call.call({"from": sender, "value": value}, block_identifier=block - 1)
        except ContractLogicError as exc:
            return getattr(exc, "data", None)
        except Exception:  # no tracer, or the node cannot re-run it: the reason stays unknown
            return None
        return None

    def register(self, peer_id: str, multiaddrs: Sequence[str], stake_wei: int) -> dict[str, Any]:
        return self._transact(self.contract.functions.register(peer_id, list(multiaddrs)), value=stake_wei)

    def update_peer_info(self, peer_id: str, multiaddrs: Sequence[str]) -> dict[str, Any]:
        return self._transact(self.contract.functions.updatePeerInfo(peer_id, list(multiaddrs)))

    def add_stake(self, amount_wei: int) -> dict[str, Any]:
        return self._transact(self.contract.functions.addStake(), value=amount_wei)

    def request_unstake(self) -> dict[str, Any]:
        return self._transact(self.contract.functions.requestUnstake())

    def withdraw_stake(self) -> dict[str, Any]:
        return self._transact(self.contract.functions.withdrawStake())

    def create_task(
        self, model_cid: str, spec_cid: str, params: TaskParams, reward_wei: int
    ) -> tuple[int, dict[str, Any]]:
        """Create a task; returns (task id, receipt)."""
        params.validate()
        receipt = self._transact(
            self.contract.functions.createTask(params.contract_args(model_cid, spec_cid)), value=reward_wei
        )
        events = self.events(receipt, "TaskCreated")
        if not events:
            raise ChainError("createTask succeeded but emitted no TaskCreated event")
        return int(events[0]["args"]["taskId"]), receipt

    def draw_committee(self, task_id: int) -> tuple[list[str], dict[str, Any]]:
        """Draw the open round's committee; returns (members, receipt). Members are [] when the
        seed block was too old (draw again) or nobody was eligible (the round is void)."""
        receipt = self._transact(self.contract.functions.drawCommittee(task_id), next_block=True)
        drawn = self.events(receipt, "CommitteeDrawn")
        return (list(drawn[0]["args"]["members"]) if drawn else []), receipt

    def commit(self, task_id: int, round_: int, commitment: bytes) -> dict[str, Any]:
        return self._transact(self.contract.functions.commit(task_id, round_, commitment))

    def reveal(self, task_id: int, round_: int, cid: str, num_samples: int, salt: bytes) -> dict[str, Any]:
        return self._transact(self.contract.functions.reveal(task_id, round_, cid.encode(), num_samples, salt))

    def propose(
        self, task_id: int, round_: int, global_cid: str, scores_wad: Sequence[int], available: int | None = None
    ) -> dict[str, Any]:
        """Post a proposal; `available` is the bitmap of the updates it aggregated (None: all of them)."""
        bitmap = all_available(len(scores_wad)) if available is None else available
        return self._transact(
            self.contract.functions.propose(task_id, round_, global_cid.encode(), [int(s) for s in scores_wad], bitmap)
        )

    def attest(self, task_id: int, round_: int, agree: bool) -> dict[str, Any]:
        return self._transact(self.contract.functions.attest(task_id, round_, agree))

    def abstain(self, task_id: int, round_: int) -> dict[str, Any]:
        """Tell the chain this node cannot check the pending proposal (an update it aggregated is unavailable)."""
        return self._transact(self.contract.functions.abstain(task_id, round_))

    def finalize(self, task_id: int, round_: int, global_cid: str, scores_wad: Sequence[int]) -> dict[str, Any]:
        return self._transact(
            self.contract.functions.finalize(task_id, round_, global_cid.encode(), [int(s) for s in scores_wad])
        )

    def advance(self, task_id: int) -> dict[str, Any]:
        return self._transact(self.contract.functions.advance(task_id))

    def withdraw(self) -> dict[str, Any]:
        return self._transact(self.contract.functions.withdraw())


def send_ether(w3: Web3, sender: LocalAccount, to: str, value_wei: int) -> dict[str, Any]:
    """A plain transfer, priced from the latest base fee (EIP-1559).

    Not from `eth_gasPrice`: anvil derives that from recent transactions' prices, so paying
    a multiple of it compounds with every transfer."""
    base = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
    tip = 10**9
    tx = {
        "to": to_checksum_address(to),
        "value": value_wei,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "gas": 21000,
        "maxFeePerGas": 2 * base + tip,
        "maxPriorityFeePerGas": tip,
        "chainId": w3.eth.chain_id,
        "type": 2,
    }
    try:
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        return dict(w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120))
    except Web3Exception as exc:
        raise ChainError(f"sending {value_wei} wei to {to} failed: {exc}") from None
