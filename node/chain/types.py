"""The FedLedger contract's data as the node sees it: phases, tasks, rounds, members, logs, the
revert error, and the two hashes the node must compute exactly as the contract does.

Plain values, no chain access: every layer may import them (node.chain.client fills them in).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Sequence

from eth_abi import encode as abi_encode
from eth_utils import keccak

from node.errors import ChainError

CONTRACT = "FedLedger"  # the artifact (contracts/artifacts/) this package wraps


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
    earned: bool  # the sender had earned influence before it revealed (`aggregate_round`'s `earned`)


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
