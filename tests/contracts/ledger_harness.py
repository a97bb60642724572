"""Helpers for FedLedger contract tests: an in-process EVM, artifact deployment, custom-error checks,
and a driver that walks a round through draw -> commit -> reveal -> propose -> attest -> finalize.

Imported by name from tests in this folder (a unique module name, so it cannot collide with another
folder's conftest.py).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth.vm.message import Message
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import (
    event_abi_to_log_topic,
    function_signature_to_4byte_selector,
    keccak,
    to_canonical_address,
    to_checksum_address,
)
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.types import TxReceipt

from incentives.reputation import REPUTATION_ALPHA, REPUTATION_THRESHOLD
from node.chain.replayable import ReplayableBackend
from node.chain.views import _abi_type, _normalize

ARTIFACTS = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
WAD = 10**18
MIN_STAKE = 10**16  # 0.01 ETH
REWARD = 10**18  # 1 ETH pool for the default task
MODEL_CID = b"bafk-initial-model"
SPEC_CID = b"bafk-task-spec"
TIMEOUT = 600  # seconds, every phase of the default task

# Phase enum of the contract
DRAW, COMMIT, REVEAL, PROPOSE, ATTEST, FINALIZED, VOID = range(7)


@dataclass(frozen=True)
class TaskConfig:
    """The contract's TaskConfig struct, with test defaults."""

    model_cid: bytes = MODEL_CID
    spec_cid: bytes = SPEC_CID
    rule_params: bytes = b"{}"
    rounds: int = 2
    committee_size: int = 3
    rule: int = 0
    max_samples: int = 1000
    commit_timeout: int = TIMEOUT
    reveal_timeout: int = TIMEOUT
    propose_timeout: int = TIMEOUT
    attest_timeout: int = TIMEOUT
    min_stake: int = MIN_STAKE
    reputation_threshold: int = REPUTATION_THRESHOLD
    alpha: int = REPUTATION_ALPHA  # the defaults the off-chain mirror (TaskIncentives) assumes
    proposer_share_bps: int = 500
    attester_share_bps: int = 500
    min_committee: int = 1  # fewest eligible nodes a draw seats (the node's default is 3)

    def args(self) -> tuple[Any, ...]:
        return (
            self.model_cid, self.spec_cid, self.rule_params, self.rounds, self.committee_size, self.rule,
            self.max_samples, self.commit_timeout, self.reveal_timeout, self.propose_timeout,
            self.attest_timeout, self.min_stake, self.reputation_threshold, self.alpha,
            self.proposer_share_bps, self.attester_share_bps, self.min_committee,
        )  # fmt: skip

    def but(self, **changes: Any) -> "TaskConfig":
        return replace(self, **changes)


def commitment(cid: bytes, num_samples: int, salt: bytes, sender: str) -> bytes:
    """keccak256(abi.encode(cid, numSamples, salt, sender)), as the contract checks it."""
    return keccak(abi_encode(["bytes", "uint256", "bytes32", "address"], [cid, num_samples, salt, sender]))


def salt_for(sender: str, round_: int) -> bytes:
    return keccak(f"salt-{sender}-{round_}".encode())


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
    """One eth-tester EVM with web3 in front, plus helpers to deploy, transact, travel and expect reverts.

    `replayable=True` uses node.chain.replayable: the same calls give the same chain, byte for byte."""

    def __init__(self, replayable: bool = False) -> None:
        self.tester = EthereumTester(ReplayableBackend() if replayable else PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
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

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def travel(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block there."""
        self.tester.time_travel(self.now() + seconds)

    def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)

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


class DirectContract:
    """A deployed contract driven straight on the chain's py-evm, for a test that makes tens of
    thousands of calls (the stateful test): same chain, same transactions, same results as through
    web3, without web3's and eth-tester's per-call cost (middleware, formatters, ABI encoding
    worked out afresh every call, a fresh VM per view, several RPC round trips per transaction).

    - `call(name, *args)`: a view, run as one static message (it cannot write) on a VM kept for
      the head block. Unlike node.chain.embedded_calls, which applies a whole spoofed transaction
      and reverts it (and py-evm's revert empties its account cache), nothing is charged or
      reverted, so the reads of one head share warm caches. Results come back as web3 returns
      them; a revert raises ContractLogicError with the revert data.
    - `send(name, args, sender, value)`: the transaction web3's transact would send with the fixed
      gas limit `gas` (no estimate), applied and mined in a block of its own as eth-tester's
      auto-mining does; its events as `(name, {arg: value})` pairs (as web3 decodes them) when it
      succeeded, None when it reverted.
    - `balance(address)`: an account's wei (the contract's by default) at the head.

    Selectors and ABI types are worked out once per function.
    """

    def __init__(self, chain: Chain, contract: Contract, gas: int) -> None:
        self._backend = chain.tester.backend
        self.address = to_canonical_address(contract.address)
        self._gas = gas
        self._origin = to_canonical_address(chain.accounts[0])  # views' sender, as eth_call's default
        self._keys = {k.public_key.to_canonical_address(): k for k in self._backend.account_keys}
        self._abi = {e["name"]: e for e in contract.abi if e["type"] == "function"}
        self._functions: dict[str, tuple[bytes, list[str], list[str]]] = {}
        self._events = {
            event_abi_to_log_topic(e): (e["name"], e["inputs"]) for e in contract.abi if e["type"] == "event"
        }
        self._head: bytes | None = None
        self._vm: Any = None
        self._code = b""

    def _function(self, name: str) -> tuple[bytes, list[str], list[str]]:
        entry = self._functions.get(name)
        if entry is None:
            abi = self._abi[name]
            inputs = [_abi_type(i) for i in abi["inputs"]]
            selector = function_signature_to_4byte_selector(f"{name}({','.join(inputs)})")
            entry = self._functions[name] = (selector, inputs, [_abi_type(o) for o in abi["outputs"]])
        return entry

    def _head_vm(self) -> Any:
        chain = self._backend.chain
        head = chain.get_canonical_head()
        if head.hash != self._head:
            self._vm = chain.get_vm(at_header=head)
            self._head = head.hash
            self._code = self._code or self._vm.state.get_code(self.address)
        return self._vm

    def call(self, name: str, *args: Any) -> Any:
        selector, inputs, outputs = self._function(name)
        state = self._head_vm().state
        message = Message(
            gas=self._gas, to=self.address, sender=self._origin, value=0,
            data=selector + abi_encode(inputs, args), code=self._code, is_static=True,
        )  # fmt: skip
        context = state.get_transaction_context_class()(gas_price=0, origin=self._origin)
        computation = state.computation_class.apply_message(state, message, context)
        if computation.is_error:
            raise ContractLogicError(f"execution reverted: {computation.error!r}", data="0x" + computation.output.hex())
        decoded = [_normalize(v, t) for v, t in zip(abi_decode(outputs, computation.output), outputs)]
        return decoded[0] if len(decoded) == 1 else decoded

    def balance(self, address: str | None = None) -> int:
        """Wei held by `address` (by this contract when None) at the head."""
        return self._head_vm().state.get_balance(to_canonical_address(address) if address else self.address)

    def send(self, name: str, args: Sequence[Any], sender: str, value: int = 0) -> list[tuple[str, dict]] | None:
        selector, inputs, _ = self._function(name)
        chain = self._backend.chain
        origin = to_canonical_address(sender)
        # The transaction web3's transact sends through eth-tester (EIP-1559, 1 gwei fee cap and
        # tip, no access list), so on a replayable chain every block after it is the same too.
        unsigned = chain.get_transaction_builder().new_unsigned_dynamic_fee_transaction(
            chain_id=chain.chain_id, nonce=self._head_vm().state.get_nonce(origin),
            max_priority_fee_per_gas=10**9, max_fee_per_gas=10**9, gas=self._gas, to=self.address,
            value=value, data=selector + abi_encode(inputs, args), access_list=(),
        )  # fmt: skip
        _, _, computation = chain.apply_transaction(unsigned.as_signed_transaction(self._keys[origin]))
        self._backend.mine_blocks()  # eth-tester's auto-mining
        if computation.is_error:
            return None
        return [self._event(log) for log in computation.get_log_entries() if log[0] == self.address]

    def _event(self, log: tuple[bytes, list[int], bytes]) -> tuple[str, dict]:
        _, topics, data = log
        name, inputs = self._events[topics[0].to_bytes(32, "big")]
        indexed = iter(topics[1:])
        plain = iter(abi_decode([_abi_type(i) for i in inputs if not i["indexed"]], data))
        values = {}
        for i in inputs:
            typ = _abi_type(i)
            value = abi_decode([typ], next(indexed).to_bytes(32, "big"))[0] if i["indexed"] else next(plain)
            values[i["name"]] = _normalize(value, typ)
        return name, values


class Protocol:
    """Drives FedLedger rounds the honest way; each step is one method so tests can stop anywhere."""

    def __init__(self, chain: Chain, ledger: Contract) -> None:
        self.chain = chain
        self.ledger = ledger
        self.f = ledger.functions

    def register(self, nodes: Sequence[str], stake: int = MIN_STAKE) -> None:
        for i, node in enumerate(nodes):
            self.chain.send(self.f.register(f"12D3KooNode{i}", [f"/ip4/127.0.0.1/tcp/{4000 + i}"]), node, stake)

    def create_task(self, owner: str, config: TaskConfig = TaskConfig(), reward: int = REWARD) -> int:
        self.chain.send(self.f.createTask(config.args()), owner, reward)
        return self.f.taskCount().call()

    def round_of(self, task: int) -> int:
        return self.f.taskInfo(task).call()[5]

    def state(self, task: int, round_: int | None = None) -> dict[str, Any]:
        r = round_ if round_ is not None else self.round_of(task)
        names = [
            "phase", "committeeLen", "commitCount", "revealCount", "voters", "agrees", "disagrees", "abstains",
            "attempt", "deadline", "seedBlock", "openedBlock", "proposer", "proposalHash", "available",
        ]  # fmt: skip
        return dict(zip(names, self.f.roundState(task, r).call()))

    def draw(self, task: int, sender: str | None = None) -> list[str]:
        """Draw the open round's committee; [] when nobody was eligible and the round went void."""
        round_ = self.round_of(task)
        self.chain.send(self.f.drawCommittee(task), sender or self.chain.accounts[0])
        return list(self.f.committee(task, round_).call())

    @staticmethod
    def cid(member: str, round_: int) -> bytes:
        return f"bafk-update-{member[-6:]}-{round_}".encode()

    def commit(self, task: int, members: Sequence[str], samples: int = 100) -> None:
        r = self.round_of(task)
        for m in members:
            self.chain.send(self.f.commit(task, r, commitment(self.cid(m, r), samples, salt_for(m, r), m)), m)

    def reveal(self, task: int, members: Sequence[str], samples: int = 100) -> list[TxReceipt]:
        r = self.round_of(task)
        return [
            self.chain.send(self.f.reveal(task, r, self.cid(m, r), samples, salt_for(m, r)), m) for m in members
        ]

    def revealed(self, task: int) -> list[str]:
        return list(self.f.roundUpdates(task, self.round_of(task)).call()[0])

    def propose(
        self, task: int, scores: Sequence[int], cid: bytes | None = None, sender: str | None = None,
        available: int | None = None,
    ) -> TxReceipt:
        """Propose `scores` (and `cid`); `available` is the bitmap of aggregated updates (default: all)."""
        r = self.round_of(task)
        proposer = sender or self.f.designatedProposer(task, r).call()
        bitmap = (1 << len(scores)) - 1 if available is None else available
        return self.chain.send(self.f.propose(task, r, cid or f"bafk-global-{r}".encode(), list(scores), bitmap), proposer)

    def attest(self, task: int, voters: Sequence[str], agree: bool = True) -> None:
        r = self.round_of(task)
        for v in voters:
            self.chain.send(self.f.attest(task, r, agree), v)

    def earned(self, account: str) -> int:
        """Rewards credited to `account`, withdrawable or still held for its probation."""
        return self.f.pendingRewards(account).call() + self.f.probationOf(account).call()[2]

    def voters(self, task: int) -> list[str]:
        st = self.state(task)
        return [a for a in self.revealed(task) if a != st["proposer"]]

    def finalize(self, task: int, scores: Sequence[int], cid: bytes | None = None, sender: str | None = None) -> TxReceipt:
        r = self.round_of(task)
        call = self.f.finalize(task, r, cid or f"bafk-global-{r}".encode(), list(scores))
        return self.chain.send(call, sender or self.chain.accounts[0])

    def run_round(self, task: int, scores: Sequence[int] | None = None) -> tuple[list[str], TxReceipt]:
        """One honest round: everyone drawn commits and reveals, the designated proposer's proposal
        is agreed by all; returns (reveal order, finalize receipt)."""
        members = self.draw(task)
        self.commit(task, members)
        self.reveal(task, members)
        order = self.revealed(task)
        scores = list(scores) if scores is not None else [WAD] * len(order)
        self.propose(task, scores)
        self.attest(task, self.voters(task))
        return order, self.finalize(task, scores)
