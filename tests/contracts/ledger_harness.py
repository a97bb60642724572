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
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.types import TxReceipt

from incentives.reputation import REPUTATION_ALPHA, REPUTATION_THRESHOLD

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

    def args(self) -> tuple[Any, ...]:
        return (
            self.model_cid, self.spec_cid, self.rule_params, self.rounds, self.committee_size, self.rule,
            self.max_samples, self.commit_timeout, self.reveal_timeout, self.propose_timeout,
            self.attest_timeout, self.min_stake, self.reputation_threshold, self.alpha,
            self.proposer_share_bps, self.attester_share_bps,
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


class ReplayableBackend(PyEVMBackend):
    """py-evm whose blocks are a function of their transactions alone, so a replayed sequence of
    calls meets the same block hashes (and so the same committee draws).

    Stock eth-tester stamps blocks with the wall clock and gives each a random mix hash
    (prevrandao). Here the genesis lies in the future (2096), so every block is its parent's
    timestamp + 1 (py-evm takes the later of that and now) unless the test travels in time, and
    the mix hash is derived from the parent's hash.
    """

    GENESIS_TIMESTAMP = 4_000_000_000

    def __init__(self) -> None:
        params = PyEVMBackend.generate_genesis_params(overrides={"timestamp": self.GENESIS_TIMESTAMP})
        super().__init__(genesis_parameters=params)

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = b"\x00" * 20) -> tuple[bytes, ...]:
        hashes = []
        for _ in range(num_blocks):
            parent = self.chain.get_canonical_head()
            kwargs: dict[str, Any] = {"coinbase": coinbase, "mix_hash": keccak(b"mix" + parent.hash)}
            if self.chain.get_block().transactions and hasattr(self.chain.get_block().header, "blob_gas_used"):
                kwargs["blob_gas_used"] = 0  # no blob transactions are ever sent here
            hashes.append(self.chain.mine_block(**kwargs).hash)
        return tuple(hashes)


class Chain:
    """One eth-tester EVM with web3 in front, plus helpers to deploy, transact, travel and expect reverts.

    `replayable=True` uses ReplayableBackend: the same calls give the same chain, byte for byte."""

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
            "phase", "committeeLen", "commitCount", "revealCount", "voters", "agrees", "disagrees",
            "attempt", "deadline", "seedBlock", "openedBlock", "proposer", "proposalHash",
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

    def propose(self, task: int, scores: Sequence[int], cid: bytes | None = None, sender: str | None = None) -> TxReceipt:
        r = self.round_of(task)
        proposer = sender or self.f.designatedProposer(task, r).call()
        return self.chain.send(self.f.propose(task, r, cid or f"bafk-global-{r}".encode(), list(scores)), proposer)

    def attest(self, task: int, voters: Sequence[str], agree: bool = True) -> None:
        r = self.round_of(task)
        for v in voters:
            self.chain.send(self.f.attest(task, r, agree), v)

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
