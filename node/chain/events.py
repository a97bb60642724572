"""The client's view of the contract's events: logs by name or by block, decoded into
`ChainLog`s, and the gas a block's round transactions spent.

`ClientLogs` also declares the state that every part of `FedLedgerClient` shares (the parts are
layered: logs, then reads in node/chain/reads.py, then sends in node/chain/sends.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from eth_utils import event_abi_to_log_topic, function_signature_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.logs import DISCARD

from node.chain.types import CONTRACT, BlockActivity, ChainLog
from node.errors import ChainError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from node.chain.embedded_calls import EmbeddedCaller
    from node.chain.views import ReadCache, RpcViews

# The contract functions that do a round's work. Their gas is the round's gas, as the
# in-process simulation counts it; registration and peer-info updates are not.
ROUND_FUNCTIONS = frozenset({"advance", "drawCommittee", "commit", "reveal", "propose", "attest", "finalize"})


class ClientLogs:
    """The contract's logs, and the state the client's parts share (set by FedLedgerClient)."""

    w3: Web3
    abi: list[dict[str, Any]]
    address: str
    contract: Any  # web3's Contract at `address`
    account: LocalAccount | None  # None: read-only
    _embedded: bool  # the in-process chain (eth-tester)
    _caller: EmbeddedCaller | None  # runs calls straight on py-evm (embedded chain only)
    _rpc_views: RpcViews  # views as raw eth_calls (any other chain)
    _read_cache: ReadCache  # views kept within a `cached_reads` scope
    _chain_id: int | None
    _revealed: dict[tuple[int, int, str, bytes], str]
    _round_selectors: set[bytes] | None
    _event_names: dict[bytes, str]

    def events(self, receipt: dict[str, Any], name: str) -> list[Any]:
        """The `name` events this contract emitted in `receipt` (other logs are skipped)."""
        return list(getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD))

    def logs(self, event: str, from_block: int = 0, to_block: int | str = "latest", **filters: Any) -> list[ChainLog]:
        """The contract's `event` logs in [from_block, to_block], oldest first. `filters` match
        indexed arguments by name (e.g. taskId=1, round=2); a list matches any of its values."""
        if not any(e.get("type") == "event" and e.get("name") == event for e in self.abi):
            raise ValueError(f"{CONTRACT} has no event {event!r}")
        found = getattr(self.contract.events, event)().get_logs(
            from_block=from_block, to_block=to_block, argument_filters=filters or None
        )
        return sorted((_chain_log(event, ev) for ev in found), key=lambda log: (log.block, log.log_index))

    def logs_of(self, events: Sequence[str], from_block: int, to_block: int | str = "latest") -> list[ChainLog]:
        """The contract's logs of any of `events` in [from_block, to_block], oldest first, read
        with one eth_getLogs: a follower that reads several kinds each block pays one request."""
        names = self._names_by_topic()
        topics = {name: topic for topic, name in names.items()}
        for event in events:
            if event not in topics:
                raise ValueError(f"{CONTRACT} has no event {event!r}")
        found = self.w3.eth.get_logs({
            "address": self.address, "fromBlock": from_block, "toBlock": to_block,
            "topics": [["0x" + topics[e].hex() for e in events]],
        })  # fmt: skip
        logs = [self._decode_log(raw) for raw in found]
        return sorted((log for log in logs if log is not None), key=lambda log: (log.block, log.log_index))

    def _names_by_topic(self) -> dict[bytes, str]:
        if not self._event_names:
            self._event_names = {event_abi_to_log_topic(e): e["name"] for e in self.abi if e.get("type") == "event"}
        return self._event_names

    def _decode_log(self, raw: Any) -> ChainLog | None:
        """One raw log as a ChainLog; None when it is not one of this contract's events."""
        name = self._names_by_topic().get(bytes(raw["topics"][0])) if raw["topics"] else None
        if name is None or to_checksum_address(raw["address"]) != self.address:
            return None
        return _chain_log(name, getattr(self.contract.events, name)().process_log(raw))

    def protocol_gas(self, first_block: int, last_block: int) -> int:
        """Gas used by the transactions to this contract in blocks first_block..last_block whose
        function is one of ROUND_FUNCTIONS, whoever sent them and whether or not they reverted
        (a lost race still costs its sender)."""
        return sum(self.block_activity(n).round_gas for n in range(first_block, last_block + 1))

    def block_activity(self, number: int) -> BlockActivity:
        """What this contract did in block `number`: its events, and the gas of the round's
        transactions (see protocol_gas). One read of the block and its receipts, for callers
        that follow a run block by block."""
        if self._round_selectors is None:
            self._round_selectors = {
                function_signature_to_4byte_selector(f"{e['name']}({','.join(i['type'] for i in e['inputs'])})")
                for e in self.abi
                if e.get("type") == "function" and e["name"] in ROUND_FUNCTIONS
            }
        gas, logs = 0, []
        for tx in self.w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx.get("to") != self.address:
                continue
            receipt = self.w3.eth.get_transaction_receipt(tx["hash"])
            data = tx["input"] if "input" in tx else tx["data"]  # eth-tester names it as py-evm does
            if bytes(data)[:4] in self._round_selectors:
                gas += int(receipt["gasUsed"])
            logs += [log for log in map(self._decode_log, receipt["logs"]) if log is not None]
        return BlockActivity(number, sorted(logs, key=lambda log: log.log_index), gas)

    def task_config(self, task_id: int) -> dict[str, Any]:
        """The TaskConfig the task was created with (reputation alpha and threshold, reward shares,
        timeouts...), decoded from its createTask transaction: the contract keeps these private."""
        created = self.logs("TaskCreated", taskId=task_id)
        if not created:
            raise ChainError(f"no TaskCreated event for task {task_id}")
        tx = self.w3.eth.get_transaction(created[0].tx_hash)
        data = tx["input"] if "input" in tx else tx["data"]
        fn, args = self.contract.decode_function_input(data)
        if fn.fn_name != "createTask":
            raise ChainError(f"task {task_id} was created by {fn.fn_name}, not createTask")
        return dict(args["config"])

    def finalized_cids(self, task_id: int, from_block: int = 0) -> dict[int, str]:
        """Round -> global model CID of every finalized round of the task, from its RoundFinalized
        logs (the contract keeps only the latest)."""
        return {int(log.args["round"]): bytes(log.args["cid"]).decode("utf-8", "replace")
                for log in self.logs("RoundFinalized", from_block, taskId=task_id)}  # fmt: skip


def _chain_log(event: str, ev: Any) -> ChainLog:
    return ChainLog(
        event=event,
        args=dict(ev["args"]),
        block=int(ev["blockNumber"]),
        log_index=int(ev["logIndex"]),
        tx_hash="0x" + bytes(ev["transactionHash"]).hex(),
    )
