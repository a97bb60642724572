"""The client's reads: the contract's views (straight from py-evm on the embedded chain, else
eth_call) and what the node asks of the chain itself (head block, time, balances, gas price).
"""

from __future__ import annotations

from typing import Any, ContextManager

from eth_utils import keccak, to_checksum_address
from web3.exceptions import ContractLogicError

from node.chain.events import ClientLogs
from node.chain.reverts import describe_revert
from node.chain.types import MemberInfo, NodeStatus, Phase, RoundState, RoundUpdate, TaskInfo
from node.errors import ChainError


class ClientReads(ClientLogs):
    """What the contract and the chain hold, read without sending anything."""

    def _view(self, name: str, *args: Any) -> Any:
        """The contract's view `name`: straight from py-evm on the embedded chain, else an eth_call
        sent raw (node/chain/views.py), kept while a `cached_reads` scope is open."""
        if self._caller is not None:
            return self._caller.call(getattr(self.contract.functions, name)(*args))
        data = self._rpc_views.calldata(name, args)
        hit, value = self._read_cache.get(data)
        if hit:
            return value
        generation = self._read_cache.generation()
        value = self._rpc_views.call(name, data)
        self._read_cache.put(data, value, generation)
        return value

    def cached_reads(self) -> ContextManager[None]:
        """While open, each view is asked of the chain once (see `ReadCache`); a transaction this
        client sends drops what was kept. For one consistent look: the daemon's loop iteration."""
        return self._read_cache.scope()

    def _rpc(self, method: str, params: list[Any]) -> Any:
        """A JSON-RPC result, sent through the provider without web3's middleware (see views.py)."""
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if response.get("error") is not None or "result" not in response:
            raise ChainError(f"{method} failed: {str(response.get('error'))[:300]}")
        return response["result"]

    def head_block(self) -> int:
        """The latest block's number."""
        if self._embedded:
            return int(self.w3.eth.block_number)
        return int(self._rpc("eth_blockNumber", []), 16)

    def head_timestamp(self) -> int:
        """The latest block's timestamp (unix seconds): the clock the contract's deadlines use."""
        if self._embedded:
            return int(self.w3.eth.get_block("latest")["timestamp"])
        return int(self._rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def gas_price_cap(self) -> int:
        """What a transaction may pay per gas at most: web3's default cap, twice the latest base
        fee plus a 1 gwei tip (the gas price on a chain without base fees)."""
        base = self.w3.eth.get_block("latest").get("baseFeePerGas")
        return 2 * int(base) + 10**9 if base is not None else int(self.w3.eth.gas_price)

    def balance_of(self, address: str) -> int:
        """An account's balance in wei."""
        return int(self.w3.eth.get_balance(to_checksum_address(address)))

    def task_min_stake(self, task_id: int) -> int:
        """The task's minimum stake, which is also what one slash in it takes (FedLedger._slash)."""
        return int(self._view("taskParams", task_id)[1])

    def draw_revert_reason(self, task_id: int, sender: str | None = None) -> str | None:
        """Why `drawCommittee(task_id)` sent now by `sender` (default: this client's account)
        would revert (e.g. FedLedgerCommitteeTooSmall), asked with a free eth_call on the pending
        block; None when it would not."""
        if sender is None and self.account is not None:
            sender = self.account.address
        try:
            self.contract.functions.drawCommittee(task_id).call({"from": sender}, block_identifier="pending")
        except ContractLogicError as exc:
            data = exc.data if isinstance(exc.data, (str, bytes)) else None
            return describe_revert(self.abi, data) or str(exc)
        return None

    def reputation_of(self, node: str, block: int | None = None) -> int:
        """The node's reputation (wad) now, or as of the end of `block`."""
        if block is None:
            return int(self._view("reputationOf", to_checksum_address(node)))
        return int(self.contract.functions.reputationOf(to_checksum_address(node)).call(block_identifier=block))

    def member_info(self, task_id: int, round_: int, node: str | None = None) -> MemberInfo:
        """`node`'s standing in a round; node defaults to this client's account."""
        if node is None:
            if self.account is None:
                raise ChainError("member_info needs a node address: this client has no account")
            node = self.account.address
        member, commitment, revealed, vote, attempt = self._view(
            "memberInfo", task_id, round_, to_checksum_address(node)
        )
        return MemberInfo(bool(member), bytes(commitment), bool(revealed), int(vote), int(attempt))

    def pending_rewards(self, account: str) -> int:
        return int(self._view("pendingRewards", to_checksum_address(account)))

    def probation_of(self, node: str) -> tuple[bool, int, int]:
        """(on probation, rounds scored on it, wei held until it ends) of a node (#16)."""
        on, scored, held = self._view("probationOf", to_checksum_address(node))
        return bool(on), int(scored), int(held)

    def global_model(self, task_id: int, errors: str = "strict") -> tuple[str, int]:
        """(CID, round) of the task's latest global model. The CID is the task owner's or a
        proposer's bytes: `errors="replace"` shows bytes that are not UTF-8 instead of raising."""
        cid, round_ = self._view("globalModel", task_id)
        return bytes(cid).decode("utf-8", errors), int(round_)

    def task_count(self) -> int:
        return int(self._view("taskCount"))

    def task_info(self, task_id: int, errors: str = "strict") -> TaskInfo:
        """The task's main parameters and progress; `errors` decodes its spec CID (see global_model)."""
        owner, rounds, k, rule, max_samples, current, remaining, spec = self._view("taskInfo", task_id)
        return TaskInfo(owner, rounds, k, rule, max_samples, current, int(remaining), bytes(spec).decode("utf-8", errors))

    def round_state(self, task_id: int, round_: int) -> RoundState:
        raw = self._view("roundState", task_id, round_)
        phase, *counts, proposer, phash, available = raw
        return RoundState(Phase(phase), *(int(x) for x in counts), proposer, bytes(phash), int(available))

    def committee(self, task_id: int, round_: int) -> list[str]:
        return list(self._view("committee", task_id, round_))

    def designated_proposer(self, task_id: int, round_: int) -> str:
        return str(self._view("designatedProposer", task_id, round_))

    def round_updates(self, task_id: int, round_: int) -> list[RoundUpdate]:
        """The round's revealed updates in reveal order, the canonical aggregation order.

        Storage holds senders, sample counts and CID hashes; the CIDs come from the
        round's `UpdateRevealed` logs (scanned from the round's opening block only)
        and are checked against those hashes.
        """
        senders, samples, hashes, earned = self._view("roundUpdates", task_id, round_)
        keys = [(task_id, round_, sender, bytes(h)) for sender, h in zip(senders, hashes)]
        if any(k not in self._revealed for k in keys):
            opened = self.round_state(task_id, round_).opened_block
            logs = self.logs("UpdateRevealed", from_block=opened, taskId=task_id, round=round_)
            cids = {log.args["node"]: bytes(log.args["cid"]) for log in logs}
            for key in keys:
                cid = cids.get(key[2])
                if cid is None or keccak(cid) != key[3]:
                    raise ChainError(f"no UpdateRevealed log of {key[2]} matches its on-chain CID hash")
                self._revealed[key] = cid.decode()
        return [RoundUpdate(k[2], self._revealed[k], int(n), bool(e)) for k, n, e in zip(keys, samples, earned)]

    def node_info(self, node: str) -> tuple[bool, int, str, list[str]]:
        registered, stake, peer_id, addrs = self._view("nodeInfo", to_checksum_address(node))
        return bool(registered), int(stake), peer_id, list(addrs)

    def min_stake(self) -> int:
        return int(self._view("minStake"))

    def node_status(self, node: str) -> NodeStatus:
        """FedLedger.nodeStatus: whether the node can be drawn, and where its unstaking stands."""
        active, unstake_at, exposure = self._view("nodeStatus", to_checksum_address(node))
        return NodeStatus(bool(active), int(unstake_at), int(exposure))

    def unstake_delay(self) -> int:
        """FedLedger.UNSTAKE_DELAY, seconds between requestUnstake and withdrawStake."""
        return int(self._view("UNSTAKE_DELAY"))
