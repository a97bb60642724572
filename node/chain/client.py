"""The one module that wraps the FedLedger contract for the rest of the node.

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
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, function_signature_to_4byte_selector, keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD

from node.chain.artifacts import load_artifact
from node.errors import ChainError
from node.taskspec import TaskParams

if TYPE_CHECKING:  # eth-account and py-evm are slow to import; a read-only client over RPC needs neither
    from eth_account.signers.local import LocalAccount

CONTRACT = "FedLedger"
# Gas limit of every transaction on the embedded chain (its blocks allow ~30M); far above any
# FedLedger call, and cheap: only the gas used is paid.
EMBEDDED_GAS_LIMIT = 15_000_000

# The contract functions that do a round's work. Their gas is the round's gas, as the
# in-process simulation counts it; registration and peer-info updates are not.
ROUND_FUNCTIONS = frozenset({"advance", "drawCommittee", "commit", "reveal", "propose", "attest", "finalize"})


class ContractRevert(ChainError):
    """A FedLedger call reverted. `error` is the contract's custom error by name (None when the
    revert data is not one of the contract's errors) and `arguments` its decoded arguments,
    addresses checksummed; `function` is the contract function that was called."""

    def __init__(self, function: str, error: str | None, arguments: Sequence[Any], reason: str) -> None:
        super().__init__(f"{function} reverted: {reason}")
        self.function = function
        self.error = error
        self.arguments = tuple(arguments)


class Phase(enum.IntEnum):
    """FedLedger.Phase: where a round stands."""

    DRAW = 0
    COMMIT = 1
    REVEAL = 2
    PROPOSE = 3
    ATTEST = 4
    FINALIZED = 5
    VOID = 6


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
class RoundState:
    phase: Phase
    committee_len: int
    commit_count: int
    reveal_count: int
    voters: int  # participants entitled to attest the pending proposal
    agrees: int
    disagrees: int
    abstains: int  # voters that said they cannot check the proposal (FedLedger.abstain)
    attempt: int  # proposals of this round that ended rejected or undecided (< FedLedger.MAX_ATTEMPTS)
    deadline: int  # unix seconds; end of the current phase
    seed_block: int
    opened_block: int  # the round's events are at or after this block
    proposer: str
    proposal_hash: bytes
    available: int = 0  # the pending proposal's bitmap: bit i set = update i (reveal order) aggregated


def all_available(count: int) -> int:
    """The availability bitmap of a proposal that aggregated every one of `count` updates."""
    return (1 << count) - 1


@dataclass(frozen=True)
class NodeStatus:
    """FedLedger.nodeStatus: a node's protocol standing."""

    active: bool  # can be drawn into committees
    unstake_at: int  # unix seconds (chain time) when its stake unlocks; 0 unless unstaking
    exposure: int  # open commitments and pending proposals: slashes that may still land


@dataclass(frozen=True)
class RoundUpdate:
    sender: str
    cid: str
    num_samples: int


@dataclass(frozen=True)
class MemberInfo:
    """FedLedger.memberInfo: a node's standing in one round."""

    member: bool  # sits on the round's committee
    commitment: bytes  # 32 zero bytes if none; keccak256 of its CID once revealed
    revealed: bool
    vote: int  # its latest attestation: 0 none, 1 agree, 2 disagree, 3 abstain
    attempt: int  # the proposal attempt that vote was for


@dataclass(frozen=True)
class ChainLog:
    """One event the contract emitted."""

    event: str
    args: dict[str, Any]
    block: int
    log_index: int
    tx_hash: str  # 0x-prefixed


@dataclass(frozen=True)
class BlockActivity:
    """This contract's part in one block: its events in log order, and the round's gas."""

    number: int
    logs: list[ChainLog]
    round_gas: int


def make_commitment(cid: str, num_samples: int, salt: bytes, sender: str) -> bytes:
    """keccak256(abi.encode(cid, numSamples, salt, sender)): what `commit` binds a member to."""
    return keccak(abi_encode(["bytes", "uint256", "bytes32", "address"], [cid.encode(), num_samples, salt, sender]))


def proposal_hash(cid: str, scores_wad: Sequence[int]) -> bytes:
    """keccak256(abi.encode(cid, scores)): the proposal as the contract stores it."""
    return keccak(abi_encode(["bytes", "uint256[]"], [cid.encode(), [int(s) for s in scores_wad]]))


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


def _is_embedded(w3: Web3) -> bool:
    """Whether `w3` is the in-process chain. Asked without importing eth-tester: a provider of
    that class exists only if its module was loaded."""
    module = sys.modules.get("web3.providers.eth_tester")
    return module is not None and isinstance(w3.provider, module.EthereumTesterProvider)


class FedLedgerClient:
    """A FedLedger contract at `address`, acting as `account` (None: read-only)."""

    def __init__(self, w3: Web3, address: str, account: LocalAccount | None = None) -> None:
        self.w3 = w3
        self.abi = load_artifact(CONTRACT)["abi"]
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self.account = account
        self._embedded = _is_embedded(w3)
        self._caller = None
        if self._embedded:
            from node.chain.embedded_calls import EmbeddedCaller

            self._caller = EmbeddedCaller(w3, EMBEDDED_GAS_LIMIT)
        # Revealed CIDs by (task, round, sender, CID hash): a reveal never changes once made, and
        # reading it back from the logs is the slow part of round_updates. Shared with as_account twins.
        self._revealed: dict[tuple[int, int, str, bytes], str] = {}
        self._round_selectors: set[bytes] | None = None
        self._event_names: dict[bytes, str] = {}

    def _view(self, fn: Any) -> Any:
        """A view's result: straight from py-evm on the embedded chain, else an eth_call."""
        if self._caller is not None:
            return self._caller.call(fn)
        return fn.call()

    def as_account(self, account: LocalAccount) -> "FedLedgerClient":
        """The same contract, sending as another account."""
        twin = FedLedgerClient.__new__(FedLedgerClient)
        twin.__dict__.update(self.__dict__)  # shares the contract object and the embedded caller
        twin.account = account
        return twin

    # -- sending ----------------------------------------------------------------

    def _transact(self, call: Any, value: int = 0, next_block: bool = False) -> dict[str, Any]:
        """Sign and send `call`; `next_block` estimates gas against the pending block, for calls
        that are only valid after the latest block (anvil estimates at `latest` otherwise)."""
        if self.account is None:
            raise ChainError("this client has no account to send transactions with")
        sender = self.account.address
        try:
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
            signed = self.account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        except ContractLogicError as exc:
            raise self._revert(call.fn_name, getattr(exc, "data", None), str(exc)) from None
        except Web3Exception as exc:
            raise ChainError(f"{call.fn_name} failed: {exc}") from None
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

    # -- reading ----------------------------------------------------------------

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

    def head_block(self) -> int:
        """The latest block's number."""
        return int(self.w3.eth.block_number)

    def head_timestamp(self) -> int:
        """The latest block's timestamp (unix seconds): the clock the contract's deadlines use."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

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
        return int(self._view(self.contract.functions.taskParams(task_id))[1])

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

    def reputation_of(self, node: str, block: int | None = None) -> int:
        """The node's reputation (wad) now, or as of the end of `block`."""
        fn = self.contract.functions.reputationOf(to_checksum_address(node))
        if block is None:
            return int(self._view(fn))
        return int(fn.call(block_identifier=block))

    def member_info(self, task_id: int, round_: int, node: str | None = None) -> MemberInfo:
        """`node`'s standing in a round; node defaults to this client's account."""
        if node is None:
            if self.account is None:
                raise ChainError("member_info needs a node address: this client has no account")
            node = self.account.address
        member, commitment, revealed, vote, attempt = self._view(
            self.contract.functions.memberInfo(task_id, round_, to_checksum_address(node))
        )
        return MemberInfo(bool(member), bytes(commitment), bool(revealed), int(vote), int(attempt))

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

    def pending_rewards(self, account: str) -> int:
        return int(self._view(self.contract.functions.pendingRewards(to_checksum_address(account))))

    def global_model(self, task_id: int, errors: str = "strict") -> tuple[str, int]:
        """(CID, round) of the task's latest global model. The CID is the task owner's or a
        proposer's bytes: `errors="replace"` shows bytes that are not UTF-8 instead of raising."""
        cid, round_ = self._view(self.contract.functions.globalModel(task_id))
        return bytes(cid).decode("utf-8", errors), int(round_)

    def task_count(self) -> int:
        return int(self._view(self.contract.functions.taskCount()))

    def task_info(self, task_id: int, errors: str = "strict") -> TaskInfo:
        """The task's main parameters and progress; `errors` decodes its spec CID (see global_model)."""
        owner, rounds, k, rule, max_samples, current, remaining, spec = self._view(self.contract.functions.taskInfo(task_id))
        return TaskInfo(owner, rounds, k, rule, max_samples, current, int(remaining), bytes(spec).decode("utf-8", errors))

    def round_state(self, task_id: int, round_: int) -> RoundState:
        raw = self._view(self.contract.functions.roundState(task_id, round_))
        phase, *counts, proposer, phash, available = raw
        return RoundState(Phase(phase), *(int(x) for x in counts), proposer, bytes(phash), int(available))

    def committee(self, task_id: int, round_: int) -> list[str]:
        return list(self._view(self.contract.functions.committee(task_id, round_)))

    def designated_proposer(self, task_id: int, round_: int) -> str:
        return str(self._view(self.contract.functions.designatedProposer(task_id, round_)))

    def round_updates(self, task_id: int, round_: int) -> list[RoundUpdate]:
        """The round's revealed updates in reveal order, the canonical aggregation order.

        Storage holds senders, sample counts and CID hashes; the CIDs come from the
        round's `UpdateRevealed` logs (scanned from the round's opening block only)
        and are checked against those hashes.
        """
        senders, samples, hashes = self._view(self.contract.functions.roundUpdates(task_id, round_))
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
        return [RoundUpdate(k[2], self._revealed[k], int(n)) for k, n in zip(keys, samples)]

    def node_info(self, node: str) -> tuple[bool, int, str, list[str]]:
        registered, stake, peer_id, addrs = self._view(self.contract.functions.nodeInfo(to_checksum_address(node)))
        return bool(registered), int(stake), peer_id, list(addrs)

    def min_stake(self) -> int:
        return int(self._view(self.contract.functions.minStake()))

    def node_status(self, node: str) -> NodeStatus:
        """FedLedger.nodeStatus: whether the node can be drawn, and where its unstaking stands."""
        active, unstake_at, exposure = self._view(self.contract.functions.nodeStatus(to_checksum_address(node)))
        return NodeStatus(bool(active), int(unstake_at), int(exposure))

    def unstake_delay(self) -> int:
        """FedLedger.UNSTAKE_DELAY, seconds between requestUnstake and withdrawStake."""
        return int(self._view(self.contract.functions.UNSTAKE_DELAY()))

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
